#!/bin/bash
# The nodeprep scenario of the Debian VM tier, run as root by
# nodeprep-test.service on a real bookworm host (systemd, Debian's dnsmasq,
# docker.io, cloud-init, Debian's kernel). Installed by make-disk.sh as
# /usr/local/lib/nodeprep-test/scenario.sh.
#
# Two boots. The phase is kept on the disk in /var/lib/nodeprep-test/phase:
#   phase 1 (first boot): apply-fresh, apply-second-noop, check-clean,
#           dnsmasq-answers; then `systemctl reboot` (the host runs qemu with
#           -no-reboot, so the guest's reboot ends that qemu, and the host
#           boots the same disk again: see tests/debian_vm.rs);
#   phase 2 (second boot): reboot-persists, dnsmasq-after-reboot,
#           apply-after-reboot-noop, repair-with-networkd-active; then
#           NODEPREP-SCENARIO-END and poweroff.
# Markers on the serial console: NODEPREP-BOOT, NODEPREP-STEP, NODEPREP-NOTE,
# NODEPREP-REBOOTING, NODEPREP-SCENARIO-END (see lib.sh).
#
# No /etc/nodeprep/nodeprep.toml: the embedded defaults apply, as on a host
# that runs `nodeprep apply` from cloud-init with no config.

# The console is the serial port the host reads (console=ttyS0).
exec >/dev/ttyS0 2>&1
# shellcheck source=lib.sh
. /usr/local/lib/nodeprep-test/lib.sh

STATE=/var/lib/nodeprep-test
LINK_ADDR=169.254.1.1
# The uplink that nodeprep-uplink.service makes (the VM has no NIC).
HOST_IP=192.0.2.10
FILES=(
    /etc/systemd/network/10-dummy0.netdev
    /etc/systemd/network/10-dummy0.network
    /etc/dnsmasq.d/consul.conf
    /etc/consul.d/interfaces.json
    /etc/environment
)
# The resources this tier covers so far. The consul and registrator
# containers need images that cannot be pulled here (no registry: the VM has
# no network card); a later phase loads stand-in images and drops --only.
# --only rather than --skip: a resource added to nodeprep later stays out
# until this scenario covers it.
ONLY=(--only "link,networkd,dnsmasq,consul-config,environment")
# The stand-in for Consul's DNS interface, and the answer it gives.
RESPONDER_PORT=8600
ANSWER=10.1.2.3
QNAME=web.service.consul

# ------------------------------------------------------------ helpers ----

# Inode and nanosecond mtime: a rewrite shows even within one second (and
# a rename-into-place changes the inode even when the mtime would not).
snapshot() {
    stat -c '%n inode=%i mtime=%y mode=%a size=%s' "${FILES[@]}" 2>&1
}

# Which dnsmasq process runs: changes when the unit is (re)started.
dnsmasq_identity() {
    echo "pid=$(unit_prop dnsmasq MainPID) started=$(unit_prop dnsmasq ExecMainStartTimestampMonotonic)"
}

dummy0_has_addr() {
    ip -br addr show dev dummy0 2>/dev/null | grep -qw "$LINK_ADDR/32"
}

note_host_state() {
    local label=$1
    note "$label: dnsmasq is-active=$(systemctl is-active dnsmasq) result=$(unit_prop dnsmasq Result) $(dnsmasq_identity)"
    note "$label: systemd-networkd is-enabled=$(systemctl is-enabled systemd-networkd 2>&1) is-active=$(systemctl is-active systemd-networkd)"
    note "$label: dummy0: $(ip -br addr show dev dummy0 2>&1 | tr -s ' ')"
    note "$label: udp/53 listeners: $(ss -Hlnu 'sport = :53' 2>&1 | awk '{ print $4 }' | sort | paste -sd' ')"
    note "$label: default route: $(ip route show default 2>&1)"
}

# The boot's journal of dnsmasq, and failed units: for the main engineer.
note_boot_journal() {
    local label=$1
    journalctl -b -u dnsmasq -o short-monotonic --no-pager 2>&1 | note_lines "$label dnsmasq journal"
    note "$label: failed units: $(systemctl --failed --no-legend --plain 2>&1 | awk '{ print $1 }' | paste -sd' ')"
}

dig_short() { # SERVER PORT
    dig @"$1" -p "$2" "$QNAME" +short +time=2 +tries=2 2>&1
}

responder_answers() {
    [ "$(dig @"$LINK_ADDR" -p "$RESPONDER_PORT" "$QNAME" +short +time=1 +tries=1 2>/dev/null)" = "$ANSWER" ]
}

# A tiny DNS server on 169.254.1.1:8600 in Consul's place: a second
# dnsmasq that answers every *.consul name with $ANSWER and forwards nothing
# (-C /dev/null: none of Debian's /etc/dnsmasq.* files). Stopped when the
# step's subshell exits.
start_responder() {
    dnsmasq --conf-file=/dev/null --keep-in-foreground --pid-file= \
        --port="$RESPONDER_PORT" --listen-address="$LINK_ADDR" --bind-interfaces \
        --address=/consul/"$ANSWER" --no-resolv --no-hosts --log-facility=- \
        >>"$RUN_DIR/responder.log" 2>&1 &
    RESPONDER_PID=$!
    trap 'kill "$RESPONDER_PID" 2>/dev/null; wait "$RESPONDER_PID" 2>/dev/null' EXIT
    log "stand-in DNS responder (dnsmasq) pid $RESPONDER_PID on $LINK_ADDR:$RESPONDER_PORT"
    local t
    t=$(wait_for 15 responder_answers) ||
        why "the stand-in responder on $LINK_ADDR:$RESPONDER_PORT does not answer: $(tail -n 3 "$RUN_DIR/responder.log" | tr '\n' ' ')"
    log "responder answered after ${t}s"
}

# expect_forwarded SERVER: the host's dnsmasq on SERVER:53 forwards the consul
# domain to the responder.
expect_forwarded() {
    local out
    echo "\$ dig @$1 $QNAME +short" >>"$STEP_LOG"
    out=$(dig_short "$1" 53)
    echo "$out" >>"$STEP_LOG"
    [ "$out" = "$ANSWER" ] || why "dig @$1 $QNAME answered '$(echo "$out" | tr '\n' ' ')', expected $ANSWER"
}

# -------------------------------------------------------------- steps ----

step_apply_fresh() {
    dnsmasq_identity >"$RUN_DIR/dnsmasq.before-apply"
    np --format json apply "${ONLY[@]}"
    cp "$NP_OUT" "$RUN_DIR/apply1.json"
    expect_rc 0
    expect_json "$NP_OUT" 'd["command"]' apply
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    run ip -d addr show dev dummy0
    dummy0_has_addr || why "dummy0 does not have $LINK_ADDR/32: $(ip -br addr show dev dummy0 2>&1)"
    ip -d link show dev dummy0 | grep -qw dummy || why "dummy0 is not a dummy link"
    local f
    for f in "${FILES[@]}"; do
        [ -f "$f" ] || why "$f was not written"
        { echo "--- $f"; cat "$f"; } >>"$STEP_LOG"
    done
    expect_json /etc/consul.d/interfaces.json 'd["bind_addr"]' "$HOST_IP"
    grep -qx "CONSUL_HTTP_ADDR=$LINK_ADDR:8500" /etc/environment ||
        why "/etc/environment has no line CONSUL_HTTP_ADDR=$LINK_ADDR:8500"
    local enabled
    enabled=$(systemctl is-enabled systemd-networkd 2>&1 || true)
    [ "$enabled" = enabled ] || why "systemctl is-enabled systemd-networkd says '$enabled', expected enabled"
}

step_apply_second_noop() {
    snapshot >"$RUN_DIR/snap.before"
    dnsmasq_identity >"$RUN_DIR/dnsmasq.before"
    np --format json apply "${ONLY[@]}"
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["changed"]' 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    snapshot >"$RUN_DIR/snap.after"
    if ! diff -u "$RUN_DIR/snap.before" "$RUN_DIR/snap.after" >>"$STEP_LOG"; then
        why "a no-op apply rewrote files (inode or mtime changed; diff above)"
    fi
    # DESIGN.md section 2: dnsmasq restarted only when the file changed.
    dnsmasq_identity >"$RUN_DIR/dnsmasq.after"
    cmp -s "$RUN_DIR/dnsmasq.before" "$RUN_DIR/dnsmasq.after" ||
        why "a no-op apply restarted dnsmasq ($(cat "$RUN_DIR/dnsmasq.before") -> $(cat "$RUN_DIR/dnsmasq.after"))"
}

step_check_clean() {
    np check "${ONLY[@]}"
    expect_rc 0
    np --format json check "${ONLY[@]}"
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["drift"]' 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
}

step_dnsmasq_answers() {
    local state
    state=$(systemctl is-active dnsmasq || true)
    [ "$state" = active ] || why "dnsmasq is $state, expected active"
    start_responder
    expect_forwarded "$LINK_ADDR"
    expect_forwarded 127.0.0.1
    # What a name outside the consul domain gets. The VM's resolv.conf names
    # no server (make-disk.sh), so dnsmasq has no upstream and sends nothing.
    local other
    other=$(dig @127.0.0.1 debian.org +time=2 +tries=1 2>&1 | grep -o 'status: [A-Z]*' || echo "no answer")
    echo "# other names: $other" >>"$STEP_LOG"
    echo "$other" >"$RUN_DIR/other-name-status"
}

step_reboot_persists() {
    local t
    # networkd may still be configuring the link when this unit starts.
    t=$(wait_for 30 dummy0_has_addr) ||
        why "after the reboot dummy0 lacks $LINK_ADDR/32 (waited 30s): $(ip -br addr show dev dummy0 2>&1)"
    log "dummy0 had $LINK_ADDR/32 after waiting ${t}s"
    run ip -d addr show dev dummy0
    ip -d link show dev dummy0 | grep -qw dummy || why "dummy0 is not a dummy link after the reboot"
    # Made by systemd-networkd from nodeprep's files (nodeprep has not run
    # in this boot): networkd reports the link as configured.
    networkctl status dummy0 --no-pager >>"$STEP_LOG" 2>&1 || true
    t=$(wait_for 20 sh -c 'networkctl list --no-legend dummy0 | grep -qw configured') ||
        why "networkctl does not show dummy0 as configured: $(networkctl list --no-legend 2>&1 | tr -s ' ' | paste -sd';')"
    t=$(wait_for 20 systemctl is-active --quiet dnsmasq) ||
        why "dnsmasq is $(systemctl is-active dnsmasq) after the reboot"
    np check "${ONLY[@]}"
    expect_rc 0
}

step_apply_after_reboot_noop() {
    np --format json apply "${ONLY[@]}"
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["changed"]' 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    snapshot >"$RUN_DIR/snap.after-reboot"
    if ! diff -u "$STATE/snap.phase1" "$RUN_DIR/snap.after-reboot" >>"$STEP_LOG"; then
        why "files changed between the end of boot 1 and the apply after the reboot (diff above)"
    fi
}

# Drift repaired while systemd-networkd runs (it does not in boot 1): the
# address and the .network file gone, `apply` puts both back and has
# networkd reread its files (networkctl reload), and networkd then keeps
# the address.
step_repair_with_networkd_active() {
    run ip addr del "$LINK_ADDR/32" dev dummy0
    run rm /etc/systemd/network/10-dummy0.network
    np check "${ONLY[@]}"
    expect_rc 2
    np --format json apply "${ONLY[@]}"
    cp "$NP_OUT" "$RUN_DIR/repair.json"
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '[r["status"] for r in d["resources"] if r["id"] == "link"]' "['changed']"
    expect_json "$NP_OUT" '[r["status"] for r in d["resources"] if r["id"] == "networkd"]' "['changed']"
    [ -f /etc/systemd/network/10-dummy0.network ] || why "10-dummy0.network was not written back"
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 right after apply"
    local t
    t=$(wait_for 20 sh -c 'networkctl list --no-legend dummy0 | grep -qw configured') ||
        why "networkd did not configure dummy0 again after the reload: $(networkctl list --no-legend 2>&1 | tr -s ' ' | paste -sd';')"
    # Give networkd a moment to act on the reload, then look again.
    sleep 2
    run ip -d addr show dev dummy0
    dummy0_has_addr || why "dummy0 lost $LINK_ADDR/32 after networkd reloaded"
    np check "${ONLY[@]}"
    expect_rc 0
}

# ------------------------------------------------------------- phases ----

phase1() {
    note "boot 1: scenario starts at uptime $(uptime_s)s; kernel $(uname -r); $(systemctl --version | head -n 1); $(dnsmasq --version | head -n 1)"
    cloud-init status --long 2>&1 | note_lines "boot 1 cloud-init"
    note "boot 1: docker is-active=$(systemctl is-active docker); docker0: $(ip -br addr show dev docker0 2>&1 | tr -s ' ')"
    [ ! -e /etc/nodeprep/nodeprep.toml ] || note "unexpected: /etc/nodeprep/nodeprep.toml exists"
    note_host_state "boot 1 before apply"
    note_boot_journal "boot 1 before apply"

    run_step apply-fresh step_apply_fresh
    if [ -s "$RUN_DIR/apply1.json" ]; then
        json "$RUN_DIR/apply1.json" '"\n".join("%s %s: %s" % (r["id"], r["status"], r.get("detail", "")) for r in d["resources"])' 2>&1 |
            note_lines "first apply"
    fi
    note "first apply: dnsmasq before $(cat "$RUN_DIR/dnsmasq.before-apply" 2>/dev/null), after $(dnsmasq_identity)"
    note_host_state "boot 1 after first apply"
    note "boot 1 after first apply: systemd-networkd-wait-online is-enabled=$(systemctl is-enabled systemd-networkd-wait-online 2>&1); systemd-networkd.socket is-enabled=$(systemctl is-enabled systemd-networkd.socket 2>&1)"

    run_step apply-second-noop step_apply_second_noop
    run_step check-clean step_check_clean
    run_step dnsmasq-answers step_dnsmasq_answers
    note "boot 1: a name outside the consul domain from dnsmasq on 127.0.0.1 (no upstream configured): $(cat "$RUN_DIR/other-name-status" 2>/dev/null)"
    note_boot_journal "boot 1 end"
    snapshot >"$STATE/snap.phase1"
    # Every resource, the containers included (read-only: nothing pulled).
    timeout "$NP_TIMEOUT" /usr/local/bin/nodeprep check 2>&1 | note_lines "boot 1 end: nodeprep check (all resources)"
}

phase2() {
    note "boot 2: scenario starts at uptime $(uptime_s)s"
    cloud-init status --long 2>&1 | note_lines "boot 2 cloud-init"
    note_host_state "boot 2 before nodeprep"
    networkctl list --no-legend 2>&1 | note_lines "boot 2 networkctl"
    # nodeprep enabled systemd-networkd, and with it (Also=)
    # systemd-networkd-wait-online: on a host whose only networkd link is
    # dummy0 (RequiredForOnline=no), how long did network-online.target wait?
    local wo_start wo_end
    wo_start=$(unit_prop systemd-networkd-wait-online ExecMainStartTimestampMonotonic)
    wo_end=$(unit_prop systemd-networkd-wait-online ExecMainExitTimestampMonotonic)
    note "boot 2: systemd-networkd-wait-online is-enabled=$(systemctl is-enabled systemd-networkd-wait-online 2>&1) result=$(unit_prop systemd-networkd-wait-online Result), ran $(awk -v a="${wo_start:-0}" -v b="${wo_end:-0}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')s (uptime $(awk -v a="${wo_start:-0}" 'BEGIN { printf "%.1f", a / 1e6 }')s to $(awk -v b="${wo_end:-0}" 'BEGIN { printf "%.1f", b / 1e6 }')s); dnsmasq started at uptime $(awk -v a="$(unit_prop dnsmasq ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s, docker at $(awk -v a="$(unit_prop docker ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s"
    journalctl -b -u systemd-networkd-wait-online -o short-monotonic --no-pager 2>&1 | note_lines "boot 2 wait-online journal"
    journalctl -b -u systemd-networkd -o short-monotonic --no-pager 2>&1 | note_lines "boot 2 networkd journal"

    run_step reboot-persists step_reboot_persists
    run_step dnsmasq-after-reboot step_dnsmasq_answers
    run_step apply-after-reboot-noop step_apply_after_reboot_noop
    run_step repair-with-networkd-active step_repair_with_networkd_active
    if [ -s "$RUN_DIR/repair.json" ]; then
        json "$RUN_DIR/repair.json" '"\n".join("%s %s: %s" % (r["id"], r["status"], r.get("detail", "")) for r in d["resources"])' 2>&1 |
            note_lines "repair apply"
    fi
    note_host_state "boot 2 end"
    note_boot_journal "boot 2 end"
}

mkdir -p "$STATE"
boots=$(( $(cat "$STATE/boots" 2>/dev/null || echo 0) + 1 ))
echo "$boots" >"$STATE/boots"
phase=$(cat "$STATE/phase" 2>/dev/null || echo 1)
sync
echo "NODEPREP-BOOT $boots phase=$phase uptime=$(uptime_s)"

case $phase in
    1)
        phase1
        echo 2 >"$STATE/phase"
        sync
        echo "NODEPREP-REBOOTING uptime=$(uptime_s)"
        # What `systemctl reboot` does, minus its call to logind: the minbase
        # root has no D-Bus, and `systemctl reboot` prints "Failed to
        # connect to bus" there (it reboots all the same).
        systemctl start reboot.target --job-mode=replace-irreversibly --no-block
        ;;
    2)
        phase2
        echo "done" >"$STATE/phase"
        sync
        scenario_end
        systemctl start poweroff.target --job-mode=replace-irreversibly --no-block
        ;;
    *)
        echo "NODEPREP-STEP unexpected-boot FAIL boot $boots after the scenario had ended (phase=$phase)"
        systemctl start poweroff.target --job-mode=replace-irreversibly --no-block
        ;;
esac
