# shellcheck shell=bash
# The Debian package's steps of the VM scenario (sourced by scenario.sh,
# after lib.sh; bash). Installed by make-disk.sh as
# /usr/local/lib/nodeprep-test/package-steps.sh.
#
# cloud-init's runcmd (configs/cloud-init.yaml) installs the package the
# disk carries as /var/lib/nodeprep-test/nodeprep.deb with apt-get; the
# disk also carries the same package rebuilt with a higher version,
# nodeprep-upgrade.deb. Across the scenario's boots:
#   boot 1  package-installed      what apt-get installed under cloud-init:
#                                  files, units enabled, only the timer
#                                  started, the conffile cloud-init wrote kept
#           man-and-completion     `man nodeprep`; bash completes `nodeprep ch`
#           check-timer-reports    nodeprep-check.service (the timer's) reports
#                                  the "nodeprep" TTL check to the agent:
#                                  passing, then warning after drift -- the
#                                  drift (dnsmasq file edited, /etc/environment's
#                                  key deleted) is left for the reboot
#   boot 2  boot-unit-repaired     nodeprep.service ran at boot and repaired
#                                  exactly that drift; check exits 0; the
#                                  timer's service reports passing again
#           upgrade-keeps-conffile apt-get installs nodeprep-upgrade.deb: an
#                                  edited nodeprep.toml and the host kept,
#                                  nothing restarted
#           package-removed        (after `nodeprep remove`) apt-get remove:
#                                  tool and units gone, conffile kept, so the
#                                  next boot does not set the layout up again
#   boot 3  package-reinstalled    apt-get install again: conffile kept, units
#                                  enabled again, nothing started
#           apt-remove-keeps-layout (last) apt-get remove with the layout up:
#                                  dummy0, dnsmasq's file and answers, the
#                                  containers all stay

PKG_STATE=$STATE/package
DEB_V1=$STATE/nodeprep.deb
DEB_V2=$STATE/nodeprep-upgrade.deb
CONFFILE=/etc/nodeprep/nodeprep.toml
DNSMASQ_FILE=/etc/dnsmasq.d/consul.conf
ENV_KEY=CONSUL_HTTP_ADDR
DRIFT_LINE="# edited while the host was up (nodeprep VM test, package steps)"
mkdir -p "$PKG_STATE"

deb_version() { dpkg-deb -f "$1" Version; }

installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' nodeprep 2>&1
}

# apt_get ARGS...: apt-get, non-interactive, stdin closed: a conffile
# prompt would fail the command instead of waiting.
apt_get() {
    run env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" </dev/null
}

expect_enabled() { # UNIT WANT
    local got
    got=$(systemctl is-enabled "$1" 2>&1) || true
    echo "# systemctl is-enabled $1: $got" >>"$STEP_LOG"
    [ "$got" = "$2" ] || why "$1 is-enabled '$got', expected $2"
}

# The agent's view of the "nodeprep" check (the consul stand-in on the
# link address): "<Status>|<Output>".
agent_check() {
    python3 - <<'PY'
import json, urllib.request
with urllib.request.urlopen("http://169.254.1.1:8500/v1/agent/checks", timeout=5) as r:
    checks = json.load(r)
c = checks.get("nodeprep")
print("absent" if c is None else "%s|%s" % (c.get("Status"), " / ".join(c.get("Output", "").splitlines())))
PY
}

expect_agent_check() { # WANT_STATUS
    local got
    got=$(agent_check 2>&1) || true
    echo "# agent check nodeprep: $got" >>"$STEP_LOG"
    echo "$got" >"$RUN_DIR/agent-check"
    [ "${got%%|*}" = "$1" ] || why "the agent's nodeprep check is '${got%%|*}', expected $1 (${got#*|})"
}

# start_check_service: what the timer does, once; prints the unit's result.
# A run the timer itself started is let finish first, so that the result is
# that of a run which saw the host as it is now.
start_check_service() {
    local i=0
    while [ "$(systemctl is-active nodeprep-check.service)" = activating ] && [ "$i" -lt 120 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    echo "\$ systemctl start nodeprep-check.service" >>"$STEP_LOG"
    systemctl start nodeprep-check.service >>"$STEP_LOG" 2>&1 || true
    journalctl -u nodeprep-check.service -o cat -n 12 --no-pager >>"$STEP_LOG" 2>&1 || true
    echo "$(unit_prop nodeprep-check.service Result) status=$(unit_prop nodeprep-check.service ExecMainStatus)"
}

# ------------------------------------------------------------- boot 1 ----

step_package_installed() {
    local v1 f
    v1=$(deb_version "$DEB_V1")
    echo "$v1" >"$PKG_STATE/v1"
    [ "$(installed_version)" = "install ok installed $v1" ] ||
        why "dpkg says '$(installed_version)', expected install ok installed $v1"
    for f in /usr/bin/nodeprep /usr/lib/systemd/system/nodeprep.service \
        /usr/lib/systemd/system/nodeprep-check.service /usr/lib/systemd/system/nodeprep-check.timer \
        /usr/share/man/man8/nodeprep.8.gz /usr/share/bash-completion/completions/nodeprep \
        /usr/share/zsh/vendor-completions/_nodeprep /usr/share/fish/vendor_completions.d/nodeprep.fish \
        /usr/share/doc/nodeprep/README.md /usr/share/doc/nodeprep/examples/cloud-init.yaml; do
        [ -e "$f" ] || why "$f is missing after the install"
    done
    dpkg -V nodeprep >"$RUN_DIR/dpkg-verify" 2>&1 || true
    { echo "\$ dpkg -V nodeprep"; cat "$RUN_DIR/dpkg-verify"; } >>"$STEP_LOG"
    # Every file as packaged (dpkg made the checksums at install), but the
    # conffile cloud-init wrote.
    [ "$(cat "$RUN_DIR/dpkg-verify")" = "??5?????? c $CONFFILE" ] ||
        why "dpkg -V nodeprep: $(paste -sd';' "$RUN_DIR/dpkg-verify")"
    # The maintainer scripts enabled both units, started the timer (a
    # running system) and not the boot unit: installing changed nothing.
    expect_enabled nodeprep.service enabled
    expect_enabled nodeprep-check.timer enabled
    [ "$(systemctl is-active nodeprep-check.timer)" = active ] ||
        why "nodeprep-check.timer is $(systemctl is-active nodeprep-check.timer) after the install, expected active"
    [ "$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic)" = 0 ] ||
        why "nodeprep.service ran in this boot: the install started it"
    run systemctl list-timers --all --no-pager nodeprep-check.timer
    # The conffile: the file cloud-init wrote first is kept (apt-get with
    # --force-confold), the package's commented default lands beside it.
    run dpkg-query -W -f='${Conffiles}\n' nodeprep
    dpkg-query -W -f='${Conffiles}\n' nodeprep | grep -q "^ $CONFFILE " ||
        why "$CONFFILE is not a conffile of the installed package"
    grep -q 'nodeprep-test/consul-standin:1' "$CONFFILE" ||
        why "$CONFFILE is not the one cloud-init wrote (the install replaced it)"
    /usr/bin/nodeprep config default >"$RUN_DIR/config-default"
    run cmp "$RUN_DIR/config-default" "$CONFFILE.dpkg-dist"
}

step_man_and_completion() {
    local out err
    run man -w nodeprep
    [ "$(man -w nodeprep)" = /usr/share/man/man8/nodeprep.8.gz ] ||
        why "man -w nodeprep is '$(man -w nodeprep 2>&1)'"
    out=$(MANWIDTH=80 man nodeprep 2>"$RUN_DIR/man.err" | col -b) || why "man nodeprep failed: $(cat "$RUN_DIR/man.err")"
    err=$(cat "$RUN_DIR/man.err")
    echo "$out" | head -n 30 >>"$STEP_LOG"
    [ -z "$err" ] || why "man nodeprep printed on stderr: $err"
    for want in "NODEPREP(8)" "nodeprep apply" "nodeprep completions" "EXIT STATUS"; do
        echo "$out" | grep -qF "$want" || why "man nodeprep does not show '$want'"
    done
    # bash-completion finds the package's script by the command's name,
    # as an interactive shell does on the first TAB.
    out=$(bash -c '
        . /usr/share/bash-completion/bash_completion
        __load_completion nodeprep || exit 3
        fn=$(complete -p nodeprep | sed -n "s/.*-F \([^ ]*\).*/\1/p")
        COMP_WORDS=(nodeprep ch); COMP_CWORD=1; COMP_LINE="nodeprep ch"; COMP_POINT=${#COMP_LINE}
        "$fn" nodeprep ch nodeprep
        printf "%s\n" "${COMPREPLY[@]}"' 2>&1) || why "bash completion failed: $out"
    echo "# bash completes 'nodeprep ch' to: $out" >>"$STEP_LOG"
    [ "$out" = check ] || why "bash completes 'nodeprep ch' to '$out', expected check"
}

# The timer's service, started by hand once on the clean host, then after
# drift. The drift is what the boot unit must repair after the reboot.
step_check_timer_reports() {
    local result
    result=$(start_check_service)
    [ "$result" = "success status=0" ] || why "nodeprep-check.service on a clean host: $result, expected success"
    expect_agent_check passing
    # Drift while the host is up, left in place for the reboot.
    cp -p "$DNSMASQ_FILE" "$PKG_STATE/consul.conf.clean"
    cp -p /etc/environment "$PKG_STATE/environment.clean"
    echo "$DRIFT_LINE" >>"$DNSMASQ_FILE"
    run sed -i "/^$ENV_KEY=/d" /etc/environment
    ! grep -q "^$ENV_KEY=" /etc/environment || why "could not delete $ENV_KEY from /etc/environment"
    snapshot >"$PKG_STATE/snap.drifted"
    result=$(start_check_service)
    [ "$result" = "exit-code status=2" ] || why "nodeprep-check.service after drift: $result, expected exit-code status=2"
    expect_agent_check warning
    grep -q "drift dnsmasq" "$RUN_DIR/agent-check" && grep -q "drift environment" "$RUN_DIR/agent-check" ||
        why "the warning's output does not name dnsmasq and environment: $(cat "$RUN_DIR/agent-check")"
}

# ------------------------------------------------------------- boot 2 ----

# Nobody ran apply in this boot before this step (it is the scenario's
# first, and cloud-init's runcmd runs once per instance): the repair is
# nodeprep.service's, at boot.
step_boot_unit_repaired() {
    local log
    run systemctl status --no-pager nodeprep.service || true
    [ "$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic)" != 0 ] ||
        why "nodeprep.service did not run in this boot"
    [ "$(unit_prop nodeprep.service Result) $(unit_prop nodeprep.service ExecMainStatus)" = "success 0" ] ||
        why "nodeprep.service: result $(unit_prop nodeprep.service Result), exit status $(unit_prop nodeprep.service ExecMainStatus)"
    log=$(journalctl -b -u nodeprep.service -o cat --no-pager 2>&1)
    echo "$log" >"$RUN_DIR/boot-unit.log"
    { echo "--- journalctl -b -u nodeprep.service"; echo "$log"; } >>"$STEP_LOG"
    echo "$log" | grep -Eq '^changed +dnsmasq ' || why "the boot unit's apply did not change dnsmasq"
    echo "$log" | grep -Eq '^changed +environment ' || why "the boot unit's apply did not change environment"
    echo "$log" | grep -Eq '^apply: .* 0 failed' || why "the boot unit's apply has no summary with 0 failed"
    run cmp "$PKG_STATE/consul.conf.clean" "$DNSMASQ_FILE"
    run cmp "$PKG_STATE/environment.clean" /etc/environment
    # It rewrote exactly the two drifted files.
    snapshot >"$RUN_DIR/snap.boot-unit"
    diff "$PKG_STATE/snap.drifted" "$RUN_DIR/snap.boot-unit" | grep '^>' | awk '{ print $2 }' | sort | paste -sd' ' >"$RUN_DIR/rewritten"
    echo "# files the boot unit rewrote: $(cat "$RUN_DIR/rewritten")" >>"$STEP_LOG"
    [ "$(cat "$RUN_DIR/rewritten")" = "/etc/dnsmasq.d/consul.conf /etc/environment" ] ||
        why "the boot unit rewrote '$(cat "$RUN_DIR/rewritten")', expected the dnsmasq file and /etc/environment"
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
    local result
    result=$(start_check_service)
    [ "$result" = "success status=0" ] || why "nodeprep-check.service after the boot unit's repair: $result, expected success"
    expect_agent_check passing
}

step_upgrade_keeps_conffile() {
    local v2 before
    v2=$(deb_version "$DEB_V2")
    [ "$(dpkg --compare-versions "$v2" gt "$(cat "$PKG_STATE/v1")" && echo higher)" = higher ] ||
        why "the upgrade package's version $v2 is not higher than $(cat "$PKG_STATE/v1")"
    echo "# an operator's edit before the upgrade (nodeprep VM test)" >>"$CONFFILE"
    sha256sum "$CONFFILE" /var/lib/nodeprep/state.json >"$PKG_STATE/sums.before-upgrade"
    snapshot >"$RUN_DIR/snap.before-upgrade"
    container_identity >"$RUN_DIR/containers.before-upgrade"
    dnsmasq_identity >"$RUN_DIR/dnsmasq.before-upgrade"
    before="$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic) $(unit_prop nodeprep-check.timer ActiveEnterTimestampMonotonic)"
    apt_get install "$DEB_V2"
    [ "$(installed_version)" = "install ok installed $v2" ] ||
        why "dpkg says '$(installed_version)' after the upgrade, expected $v2"
    run sha256sum -c "$PKG_STATE/sums.before-upgrade"
    for f in "$CONFFILE.dpkg-new" "$CONFFILE.dpkg-old"; do
        [ ! -e "$f" ] || why "$f exists after the upgrade"
    done
    expect_enabled nodeprep.service enabled
    expect_enabled nodeprep-check.timer enabled
    [ "$(systemctl is-active nodeprep-check.timer)" = active ] || why "nodeprep-check.timer is not active after the upgrade"
    [ "$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic) $(unit_prop nodeprep-check.timer ActiveEnterTimestampMonotonic)" = "$before" ] ||
        why "the upgrade restarted nodeprep.service or the timer"
    snapshot >"$RUN_DIR/snap.after-upgrade"
    diff -u "$RUN_DIR/snap.before-upgrade" "$RUN_DIR/snap.after-upgrade" >>"$STEP_LOG" ||
        why "the upgrade changed the host's files (diff above)"
    container_identity >"$RUN_DIR/containers.after-upgrade"
    diff -u "$RUN_DIR/containers.before-upgrade" "$RUN_DIR/containers.after-upgrade" >>"$STEP_LOG" ||
        why "the upgrade restarted a container (diff above)"
    [ "$(dnsmasq_identity)" = "$(cat "$RUN_DIR/dnsmasq.before-upgrade")" ] || why "the upgrade restarted dnsmasq"
    np --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# After `nodeprep remove` (the step before): removing the package takes the
# tool and its units; the conffile stays (remove, not purge).
step_package_removed() {
    apt_get remove nodeprep
    [ "$(installed_version)" = "deinstall ok config-files $(deb_version "$DEB_V2")" ] ||
        why "dpkg says '$(installed_version)' after apt-get remove"
    [ ! -e /usr/bin/nodeprep ] || why "/usr/bin/nodeprep is still there"
    [ ! -e /usr/lib/systemd/system/nodeprep.service ] || why "nodeprep.service is still there"
    [ ! -e /usr/lib/systemd/system/nodeprep-check.timer ] || why "nodeprep-check.timer is still there"
    [ "$(systemctl is-active nodeprep-check.timer)" != active ] || why "nodeprep-check.timer is still active"
    grep -q "an operator's edit before the upgrade" "$CONFFILE" || why "$CONFFILE lost the operator's edit on remove"
}

# ------------------------------------------------------------- boot 3 ----

# LoadState of a removed package's unit: its postrm masks it until purge
# (deb-systemd-helper), or it is simply gone.
unit_gone() {
    case $(unit_prop "$1" LoadState) in
        masked|not-found) return 0 ;;
        *) return 1 ;;
    esac
}

step_package_reinstalled() {
    unit_gone nodeprep.service ||
        why "nodeprep.service is $(unit_prop nodeprep.service LoadState) in this boot, expected masked or not-found (package removed)"
    [ "$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic)" = 0 ] ||
        why "nodeprep.service ran in this boot"
    sha256sum "$CONFFILE" >"$PKG_STATE/sums.before-reinstall"
    apt_get install "$DEB_V2"
    [ "$(installed_version)" = "install ok installed $(deb_version "$DEB_V2")" ] ||
        why "dpkg says '$(installed_version)' after the reinstall"
    run sha256sum -c "$PKG_STATE/sums.before-reinstall"
    expect_enabled nodeprep.service enabled
    expect_enabled nodeprep-check.timer enabled
    [ "$(systemctl is-active nodeprep-check.timer)" = active ] || why "nodeprep-check.timer is not active after the reinstall"
    [ "$(systemctl is-active nodeprep.service)" = inactive ] || why "the reinstall started nodeprep.service"
    ! ip link show dev dummy0 >/dev/null 2>&1 || why "dummy0 exists after the reinstall: installing set the layout up"
}

# The last step: with the layout up (and the boot unit active, as after a
# boot), removing the package leaves the host's service discovery running.
step_apt_remove_keeps_layout() {
    run systemctl start nodeprep.service
    [ "$(systemctl is-active nodeprep.service)" = active ] || why "nodeprep.service is not active"
    containers_running || why "the containers are not running before the removal"
    container_identity >"$RUN_DIR/containers.before-remove"
    apt_get remove nodeprep
    [ ! -e /usr/bin/nodeprep ] || why "/usr/bin/nodeprep is still there"
    unit_gone nodeprep.service || why "nodeprep.service is $(unit_prop nodeprep.service LoadState) after the removal"
    dummy0_has_addr || why "dummy0 lost $LINK_ADDR/32 when the package was removed: $(ip -br addr show dev dummy0 2>&1)"
    [ -f "$DNSMASQ_FILE" ] || why "$DNSMASQ_FILE is gone"
    grep -q "^$ENV_KEY=" /etc/environment || why "/etc/environment lost $ENV_KEY"
    [ -f /var/lib/nodeprep/state.json ] || why "nodeprep's record is gone: \`nodeprep remove\` after a reinstall could not undo the layout"
    systemctl is-active --quiet dnsmasq || why "dnsmasq is $(systemctl is-active dnsmasq)"
    containers_running || why "the containers stopped: $(container_state "$CONSUL"); $(container_state "$REGISTRATOR")"
    container_identity >"$RUN_DIR/containers.after-remove"
    diff -u "$RUN_DIR/containers.before-remove" "$RUN_DIR/containers.after-remove" >>"$STEP_LOG" ||
        why "removing the package restarted a container (diff above)"
    expect_forwarded "$LINK_ADDR"
    expect_forwarded 127.0.0.1
}
