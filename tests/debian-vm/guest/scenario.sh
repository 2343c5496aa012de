#!/bin/bash
# The nodeprep scenario of the Debian VM tier, run as root by
# nodeprep-test.service on a real bookworm host (systemd, Debian's dnsmasq,
# docker.io, cloud-init, Debian's kernel). Installed by make-disk.sh as
# /usr/local/lib/nodeprep-test/scenario.sh.
#
# The host is brought up by the real configs/cloud-init.yaml (made into the
# NoCloud user data by make-user-data.py, with three test-plumbing
# substitutions: the nodeprep package copied from the disk instead of
# downloaded, the TEST STAND-IN images named in nodeprep.toml, and those
# images loaded with `docker load` first). cloud-init's runcmd installs the
# package with apt-get and runs `nodeprep apply`; this unit runs after
# cloud-final.service and checks the result. The package's own steps (its
# boot unit, audit timer, man page, completion, upgrade and removal) are in
# package-steps.sh. The containers run the stand-ins (NOT Consul, NOT
# registrator): they read the config nodeprep wrote and answer HTTP and DNS
# where a real agent would, which is what nodeprep's probes ask.
#
# Up to three boots. The phase is kept on the disk in
# /var/lib/nodeprep-test/phase (tests/debian_vm.rs lists each variant's
# steps per boot):
#   phase 1 (first boot): cloud-init-done, check-all-ok, apply-second-noop,
#           dns-chain, container-dns, host-dns, upstream-down, login-env;
#           service discovery on the nm host; the package's steps on the
#           plain host; then a reboot (the host runs qemu with -no-reboot,
#           so the guest's reboot ends that qemu, and the host boots the
#           same disk again: see tests/debian_vm.rs);
#   phase 2 (second boot): reboot-persists, dns/container-dns/host-dns
#           after the reboot, apply-after-reboot-noop; on the dnsmasq hosts
#           drift-detected-and-repaired and the repair with the network
#           backend running (networkd, or NetworkManager on the nm host);
#           the nm host then goes through the dockerd restart policy, no
#           leader, a single server and `remove`; the plain host through
#           the package's upgrade, `remove` and the package's removal, then
#           a reboot;
#   phase 3 (third boot, plain host): removed-after-reboot (the host as it
#           was before nodeprep, per /var/lib/nodeprep-test/pre, made with
#           the disk), package-reinstalled, apply-again,
#           apt-remove-keeps-layout; then NODEPREP-SCENARIO-END and poweroff.
# Markers on the serial console: NODEPREP-BOOT, NODEPREP-STEP, NODEPREP-NOTE,
# NODEPREP-REBOOTING, NODEPREP-SCENARIO-END (see lib.sh).

# The console is the serial port the host reads (console=ttyS0).
exec >/dev/ttyS0 2>&1
# shellcheck source=lib.sh
. /usr/local/lib/nodeprep-test/lib.sh

STATE=/var/lib/nodeprep-test
LINK_ADDR=169.254.1.1
# The uplink that nodeprep-uplink.service makes (the VM has no NIC):
# bind_addr = "auto" resolves to it.
HOST_IP=192.0.2.10
FILES=(
    /etc/dnsmasq.d/consul.conf
    /etc/consul.d/interfaces.json
    /etc/consul.d/agent.json
    /etc/environment
)
# Every resource and probe nodeprep reports (README: JSON output).
RESOURCES="consul,consul-config,dnsmasq,docker-dns,environment,link,network,podman-boot,registrator,resolver"
PROBES="consul-dns,consul-exposure,consul-http,host-dns,registrator,upstream-dns"
# The host variant make-disk.sh made (see there): nm, plain,
# resolved-podman. The last one runs dns.backend = "resolved" (no dnsmasq)
# and rootful Podman (no docker.io).
VARIANT=$(cat /var/lib/nodeprep-test/variant)
BACKEND=dnsmasq
[ "$VARIANT" != resolved-podman ] || BACKEND=resolved
# What keeps dummy0 across reboots: NetworkManager on the nm host (it is
# active there, so network.backend = "auto" picks it), systemd-networkd on
# the others. The files nodeprep writes for it join FILES.
NETWORK=networkd
[ "$VARIANT" != nm ] || NETWORK=networkmanager
KEYFILE=/etc/NetworkManager/system-connections/dummy0.nmconnection
if [ "$NETWORK" = networkmanager ]; then
    FILES+=("$KEYFILE")
else
    FILES+=(/etc/systemd/network/10-dummy0.netdev /etc/systemd/network/10-dummy0.network)
fi
# The container engine: Docker, or rootful Podman on the resolved-podman
# host (no docker.io there). The steps speak the docker command line, which
# podman's accepts for everything they use (`docker` below is a function;
# where a command runs it through another program, e.g. `timeout`, the
# steps name "$ENGINE").
ENGINE=docker
[ "$VARIANT" != resolved-podman ] || ENGINE=podman
# StartedAt as one word: Docker gives RFC 3339, Podman's template value is a
# Go time printed with spaces unless formatted.
STARTED='{{.State.StartedAt}}'
[ "$ENGINE" != podman ] || STARTED='{{.State.StartedAt.Format "2006-01-02T15:04:05.999999999Z07:00"}}'
docker() {
    if [ "$ENGINE" = podman ]; then
        podman "$@"
    else
        command docker "$@"
    fi
}
# The site's DNS server (nodeprep-test-upstream.service) and the one name it
# knows (configured as probes.upstream_name by make-user-data.py).
UPSTREAM_NAME=upstream.example.test
UPSTREAM_ANSWER=192.0.2.99
TEST_NET=nodeprep-test-net
CONSUL=consul
REGISTRATOR=registrator
# The images named by make-user-data.py: TEST STAND-INS.
CONSUL_IMAGE=nodeprep-test/consul-standin:1
REGISTRATOR_IMAGE=nodeprep-test/registrator-standin:1
BUSYBOX_IMAGE=nodeprep-test/busybox:1
WORKLOAD_IMAGE=nodeprep-test/workload-standin:1
# The `consul` service is registered on the servers: the host's agent (a
# client, joined to the stand-in server at 10.0.0.10 that
# nodeprep-test-servers.service runs) answers it with the server's address.
QNAME=consul.service.consul
ANSWER=10.0.0.10
AGENT_DNS_PORT=8600
CLOUD_OUTPUT=/var/log/cloud-init-output.log
# nodeprep apply's lock: on /run (a tmpfs), so its absence at the start of
# boot 2 shows that no apply has run in that boot.
NP_LOCK=/run/nodeprep.lock

# ------------------------------------------------------------ helpers ----

# Inode and nanosecond mtime: a rewrite shows even within one second (and
# a rename-into-place changes the inode even when the mtime would not).
snapshot() {
    stat -c '%n inode=%i mtime=%y mode=%a size=%s' "${FILES[@]}" 2>&1 || true
}

# Which dnsmasq process runs: changes when the unit is (re)started.
dnsmasq_identity() {
    echo "pid=$(unit_prop dnsmasq MainPID) started=$(unit_prop dnsmasq ExecMainStartTimestampMonotonic)"
}

# Which container process runs: ID, StartedAt, restarts.
container_identity() {
    docker inspect -f '{{.Name}} id={{.Id}} started='"$STARTED"' restarts={{.RestartCount}}' \
        "$CONSUL" "$REGISTRATOR" 2>&1 || true
}

container_state() {
    docker inspect -f '{{.Name}} {{.State.Status}} running={{.State.Running}} restarting={{.State.Restarting}} exit={{.State.ExitCode}} started='"$STARTED"' restarts={{.RestartCount}} image={{.Config.Image}} restart={{.HostConfig.RestartPolicy.Name}}' \
        "$1" 2>&1 || true
}

# field_of FILE CONTAINER KEY: a key=value of container_identity's output.
field_of() {
    # Docker names a container "/NAME" in inspect, Podman "NAME".
    awk -v n="/$2" -v k="$3=" '$1 == n || "/" $1 == n { for (i = 2; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }' "$1" 2>/dev/null
}

containers_running() {
    local c
    for c in "$CONSUL" "$REGISTRATOR"; do
        [ "$(docker inspect -f '{{.State.Running}} {{.State.Restarting}}' "$c" 2>/dev/null)" = "true false" ] || return 1
    done
}

dummy0_has_addr() {
    ip -br addr show dev dummy0 2>/dev/null | grep -qw "$LINK_ADDR/32"
}

# NetworkManager's view of dummy0: device state and the active profile.
nm_dummy0_state() {
    nmcli -t -f GENERAL.STATE,GENERAL.CONNECTION device show dummy0 2>&1 | paste -sd' '
}

# NetworkManager has nodeprep's profile (from its keyfile) active on dummy0.
nm_profile_active() {
    nmcli -t -f NAME,DEVICE,FILENAME connection show --active 2>/dev/null |
        grep -q ":dummy0:$KEYFILE\$"
}

# The lines nodeprep's runs under cloud-init left in its output log.
cloud_apply_lines() {
    grep -c '^apply: ' "$CLOUD_OUTPUT" 2>/dev/null || true
}

note_host_state() {
    local label=$1
    note "$label: dnsmasq is-active=$(systemctl is-active dnsmasq) result=$(unit_prop dnsmasq Result) $(dnsmasq_identity)"
    note "$label: systemd-networkd is-enabled=$(systemctl is-enabled systemd-networkd 2>&1) is-active=$(systemctl is-active systemd-networkd); systemd-networkd-wait-online is-enabled=$(systemctl is-enabled systemd-networkd-wait-online 2>&1)"
    if [ "$NETWORK" = networkmanager ]; then
        note "$label: NetworkManager is-active=$(systemctl is-active NetworkManager); dummy0: $(nm_dummy0_state)"
    fi
    note "$label: dummy0: $(ip -br addr show dev dummy0 2>&1 | tr -s ' ')"
    note "$label: udp/53 listeners: $(ss -Hlnu 'sport = :53' 2>&1 | awk '{ print $4 }' | sort | paste -sd' ')"
    note "$label: default route: $(ip route show default 2>&1)"
    note "$label: docker is-active=$(systemctl is-active docker); $(container_state "$CONSUL")"
    note "$label: $(container_state "$REGISTRATOR")"
}

# The boot's journal of dnsmasq, and failed units: for the main engineer.
note_boot_journal() {
    local label=$1
    journalctl -b -u dnsmasq -o short-monotonic --no-pager 2>&1 | tail -n 12 | note_lines "$label dnsmasq journal"
    note "$label: failed units: $(systemctl --failed --no-legend --plain 2>&1 | awk '{ print $1 }' | paste -sd' ')"
}

# The stand-ins' own logs (their ready: and error: lines).
note_container_logs() {
    local label=$1 c
    for c in "$CONSUL" "$REGISTRATOR"; do
        docker logs --tail 6 "$c" 2>&1 | note_lines "$label: docker logs $c"
    done
}

# One note line per resource and probe of a nodeprep JSON document.
note_report() { # LABEL FILE
    [ -s "$2" ] || return 0
    json "$2" '"\n".join("%s %s %s: %s" % (k, r["id"], r["status"], r.get("detail", "")) for k in ("resources", "probes") for r in d.get(k, []))' 2>&1 |
        note_lines "$1"
    json "$2" '"summary %s" % d.get("summary")' 2>&1 | note_lines "$1"
}

# json expressions over a nodeprep report.
ALL_IDS='",".join(sorted(r["id"] for r in d["resources"])) + " / " + ",".join(sorted(r["id"] for r in d["probes"]))'
NOT_OK='" ".join("%s:%s=%s" % (k, r["id"], r["status"]) for k in ("resources", "probes") for r in d[k] if r["status"] != "ok") or "none"'
DRIFTED='",".join(sorted(r["id"] for r in d["resources"] if r["status"] == "drift")) or "none"'

# expect_all_ok FILE: every resource and every probe is ok, and they are
# all there.
expect_all_ok() {
    expect_json "$1" "$ALL_IDS" "$RESOURCES / $PROBES"
    expect_json "$1" "$NOT_OK" none
}

# np_until SECONDS WANT ARGS...: run nodeprep ARGS until it exits WANT, at
# most SECONDS (every try is in the transcript). Leaves the last run's
# results in $NP_OUT/$NP_RC; sets NP_WAITED and NP_TRIES.
np_until() {
    local limit=$1 want=$2 start
    shift 2
    start=$(uptime_s)
    NP_TRIES=0
    while :; do
        NP_TRIES=$((NP_TRIES + 1))
        np "$@"
        [ "$NP_RC" -ne "$want" ] || break
        if awk -v a="$start" -v b="$(uptime_s)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            break
        fi
        sleep 2
    done
    NP_WAITED=$(awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')
    log "nodeprep $* exited $NP_RC after $NP_TRIES tries in ${NP_WAITED}s (wanted $want within ${limit}s)"
}

dig_short() { # SERVER PORT
    dig @"$1" -p "$2" "$QNAME" +short +time=2 +tries=2 2>&1
}

# expect_forwarded SERVER: the host's dnsmasq on SERVER:53 forwards the
# consul domain to the agent (the stand-in) on $LINK_ADDR:$AGENT_DNS_PORT.
expect_forwarded() {
    local out
    echo "\$ dig @$1 $QNAME +short" >>"$STEP_LOG"
    out=$(dig_short "$1" 53) || true
    echo "$out" >>"$STEP_LOG"
    [ "$out" = "$ANSWER" ] || why "dig @$1 $QNAME answered '$(echo "$out" | tr '\n' ' ')', expected $ANSWER (the stand-in server's address)"
}

# -------------------------------------------------------------- steps ----

# cloud-init ran the real user data to the end, without an error, and its
# runcmd installed nodeprep and ran `nodeprep apply` (and check).
step_cloud_init_done() {
    local st out rc=0
    # (cloud-init is slow to start under TCG: asked once.)
    out=$(cloud-init status --long 2>&1) || rc=$?
    { echo "\$ cloud-init status --long"; echo "$out"; echo "  exit status: $rc"; } >>"$STEP_LOG"
    { echo "$out"; echo "(exit status $rc)"; } >"$RUN_DIR/cloud-init-status"
    st=$(echo "$out" | awk '/^status:/ { print $2 }')
    [ "$st" = "done" ] || why "cloud-init status is '$st', expected done: $(echo "$out" | tail -n 1)"
    [ "$rc" -eq 0 ] || why "cloud-init status --long exited $rc"
    run cat /run/cloud-init/result.json
    expect_json /run/cloud-init/result.json 'd["v1"]["errors"]' '[]'
    run cat /run/cloud-init/status.json
    expect_json /run/cloud-init/status.json \
        'sorted(set(str(e) for s in d["v1"].values() if isinstance(s, dict) for e in (s.get("errors") or [])))' '[]'
    # The user data cloud-init used is the one the test made from
    # configs/cloud-init.yaml (validated on the host with `cloud-init schema`).
    run cmp /var/lib/cloud/seed/nocloud/user-data /var/lib/cloud/instance/user-data.txt
    run cat /var/lib/cloud/instance/scripts/runcmd
    grep -Eq "nodeprep'? +'?apply" /var/lib/cloud/instance/scripts/runcmd ||
        why "cloud-init's runcmd script has no nodeprep apply"
    # The merged configuration (image's cloud.cfg.d + user data) passed
    # cloud-init's own schema check at boot.
    ! grep -q 'Invalid cloud-config provided' /var/log/cloud-init.log ||
        why "cloud-init logged 'Invalid cloud-config provided' at boot: $(grep -m1 'Invalid cloud-config' /var/log/cloud-init.log)"
    # runcmd took the package from the disk (in place of the download) and
    # installed it with apt-get (package-installed has the details).
    run cmp "$STATE/nodeprep.deb" /run/nodeprep.deb
    [ "$(dpkg-query -W -f='${Status}' nodeprep 2>&1)" = "install ok installed" ] ||
        why "the nodeprep package is not installed: $(dpkg-query -W -f='${Status}' nodeprep 2>&1)"
    grep -q 'nodeprep-test/consul-standin:1' /etc/nodeprep/nodeprep.toml ||
        why "/etc/nodeprep/nodeprep.toml (write_files) does not name the stand-in image"
    { echo "--- $CLOUD_OUTPUT"; cat "$CLOUD_OUTPUT"; } >>"$STEP_LOG" 2>&1
    # (Podman prints "Loaded image(s): localhost/NAME", one line for all.)
    grep -Eq '^Loaded image(\(s\))?: .*(localhost/)?nodeprep-test/consul-standin:1' "$CLOUD_OUTPUT" ||
        why "$CLOUD_OUTPUT shows no '$ENGINE load' of the stand-in images"
    local applied
    applied=$(grep '^apply: ' "$CLOUD_OUTPUT" | tail -n 1)
    [ -n "$applied" ] || why "$CLOUD_OUTPUT has no 'apply: ...' summary line: nodeprep apply did not run under cloud-init"
    case $applied in
        *" 0 failed, "*) ;;
        *) why "nodeprep apply under cloud-init reported failures: $applied" ;;
    esac
    grep -q '^check: ' "$CLOUD_OUTPUT" || why "$CLOUD_OUTPUT has no 'check: ...' summary line"
    [ -e "$NP_LOCK" ] || why "$NP_LOCK is missing: no nodeprep apply ran in this boot"
}

step_check_all_ok() {
    # The consul stand-in may still be starting (or restarting under its
    # restart policy): poll the whole check, probes included.
    np_until 60 0 --format json check
    cp "$NP_OUT" "$RUN_DIR/check1.json"
    echo "exit $NP_RC after ${NP_WAITED}s and $NP_TRIES tries" >"$RUN_DIR/check1.waited"
    expect_rc 0
    # The documented shape: one line, these keys.
    [ "$(wc -l <"$NP_OUT")" -eq 1 ] || why "nodeprep --format json check printed $(wc -l <"$NP_OUT") lines, expected 1"
    expect_json "$NP_OUT" 'sorted({"command", "version", "host", "timestamp", "duration_seconds", "summary", "resources", "probes"} - set(d)) + sorted({"ok", "changed", "drift", "failed", "skipped"} - set(d["summary"])) + [d["command"]]' "['check']"
    expect_all_ok "$NP_OUT"
    run docker ps -a --no-trunc
    local c img
    for c in "$CONSUL:$CONSUL_IMAGE" "$REGISTRATOR:$REGISTRATOR_IMAGE"; do
        img=$(docker inspect -f '{{.Config.Image}}' "${c%%:*}" 2>&1)
        # Podman names a loaded image localhost/NAME.
        img=${img#localhost/}
        [ "$img" = "${c#*:}" ] || why "container ${c%%:*} runs image '$img', expected the stand-in ${c#*:}"
    done
    expect_json /etc/consul.d/interfaces.json 'd["bind_addr"]' "$HOST_IP"
    grep -qx "CONSUL_HTTP_ADDR=$LINK_ADDR:8500" /etc/environment ||
        why "/etc/environment has no line CONSUL_HTTP_ADDR=$LINK_ADDR:8500"
}

step_apply_second_noop() {
    snapshot >"$RUN_DIR/snap.before"
    dnsmasq_identity >"$RUN_DIR/dnsmasq.before"
    container_identity >"$RUN_DIR/containers.before"
    np --format json apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["changed"]' 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    snapshot >"$RUN_DIR/snap.after"
    if ! diff -u "$RUN_DIR/snap.before" "$RUN_DIR/snap.after" >>"$STEP_LOG"; then
        why "a no-op apply rewrote files (inode or mtime changed; diff above)"
    fi
    # dnsmasq is restarted only when its file changed.
    dnsmasq_identity >"$RUN_DIR/dnsmasq.after"
    cmp -s "$RUN_DIR/dnsmasq.before" "$RUN_DIR/dnsmasq.after" ||
        why "a no-op apply restarted dnsmasq ($(cat "$RUN_DIR/dnsmasq.before") -> $(cat "$RUN_DIR/dnsmasq.after"))"
    # A converged apply restarts no container.
    container_identity >"$RUN_DIR/containers.after"
    if ! diff -u "$RUN_DIR/containers.before" "$RUN_DIR/containers.after" >>"$STEP_LOG"; then
        why "a no-op apply recreated or restarted a container (StartedAt/ID changed; diff above)"
    fi
}

# dnsmasq, from nodeprep's file, forwards the consul domain to the agent
# (the consul stand-in) on both listen addresses.
step_dnsmasq_chain() {
    local t
    t=$(wait_for 20 systemctl is-active --quiet dnsmasq) ||
        why "dnsmasq is $(systemctl is-active dnsmasq), expected active"
    grep -qx "server=/consul/$LINK_ADDR#$AGENT_DNS_PORT" /etc/dnsmasq.d/consul.conf ||
        why "/etc/dnsmasq.d/consul.conf has no line server=/consul/$LINK_ADDR#$AGENT_DNS_PORT"
    { echo "--- /etc/dnsmasq.d/consul.conf"; cat /etc/dnsmasq.d/consul.conf; } >>"$STEP_LOG"
    # The agent itself first: a failure here is the stand-in's, not dnsmasq's.
    echo "\$ dig @$LINK_ADDR -p $AGENT_DNS_PORT $QNAME +short" >>"$STEP_LOG"
    dig_short "$LINK_ADDR" "$AGENT_DNS_PORT" >>"$STEP_LOG" || true
    expect_forwarded "$LINK_ADDR"
    expect_forwarded 127.0.0.1
    # What a name outside the consul domain gets. The VM's resolv.conf names
    # no server (make-disk.sh), so dnsmasq has no upstream and sends nothing.
    local other
    other=$(dig @127.0.0.1 debian.org +time=2 +tries=1 2>&1 | grep -o 'status: [A-Z]*' || echo "no answer")
    echo "# other names: $other" >>"$STEP_LOG"
    echo "$other" >"$RUN_DIR/other-name-status"
}

# expect_nslookup NETWORK NAME WANT [NAME WANT]...: one container of the
# busybox image on NETWORK ("default" for the default bridge), started
# WITHOUT --dns, resolves each NAME to its WANT: Docker's default DNS
# (daemon.json, nodeprep's docker-dns) is the link address; on a
# user-defined network Docker's embedded resolver forwards to it. (One
# container for all names: each `docker run` costs seconds under TCG.)
expect_nslookup() {
    local net=$1 out rc=0 args=() script="" name want
    shift
    [ "$net" = default ] || args=(--network "$net")
    local pairs=("$@")
    while [ $# -gt 0 ]; do
        script="$script echo \"== $1\"; nslookup $1;"
        shift 2
    done
    echo "\$ docker run --rm ${args[*]} $BUSYBOX_IMAGE sh -c '$script'" >>"$STEP_LOG"
    out=$(timeout 60 "$ENGINE" run --rm "${args[@]}" "$BUSYBOX_IMAGE" sh -c "$script" 2>&1) || rc=$?
    echo "$out" >>"$STEP_LOG"
    echo "  exit status: $rc" >>"$STEP_LOG"
    set -- "${pairs[@]}"
    while [ $# -gt 0 ]; do
        name=$1 want=$2
        shift 2
        echo "$out" | awk -v n="== $name" '$0 == n { on = 1; next } /^== / { on = 0 } on' |
            sed -n '/^Name:/,$p' | grep -Eq "^Address:?[[:space:]]+$want\$" ||
            why "nslookup $name in a container on the $net network did not answer $want: $(echo "$out" | tr '\n' ' ')"
    done
}

# Containers started without --dns resolve the consul domain and every
# other name through the chain, on the default bridge and on a user-defined
# network; the image's own daemon.json key is still there.
step_container_dns() {
    if [ "$ENGINE" = podman ]; then
        # Podman's default DNS server: nodeprep's containers.conf drop-in.
        run cat /etc/containers/containers.conf.d/nodeprep.conf
        grep -q "dns_servers = \[\"$LINK_ADDR\"\]" /etc/containers/containers.conf.d/nodeprep.conf ||
            why "nodeprep's containers.conf drop-in does not set dns_servers to $LINK_ADDR"
    else
        run cat /etc/docker/daemon.json
        expect_json /etc/docker/daemon.json 'd.get("log-driver")' journald
        expect_json /etc/docker/daemon.json 'd.get("dns")' "['$LINK_ADDR']"
    fi
    docker network inspect "$TEST_NET" >/dev/null 2>&1 || run docker network create "$TEST_NET"
    local net
    for net in default "$TEST_NET"; do
        expect_nslookup "$net" "$QNAME" "$ANSWER" "$UPSTREAM_NAME" "$UPSTREAM_ANSWER"
    done
}

# Host processes (glibc, through /etc/resolv.conf) resolve the consul domain
# and every other name.
step_host_dns() {
    local out
    run ls -l /etc/resolv.conf
    run cat /etc/resolv.conf
    if systemctl is-active --quiet systemd-resolved; then
        run resolvectl status --no-pager
    fi
    echo "\$ getent hosts $QNAME" >>"$STEP_LOG"
    out=$(timeout 20 getent hosts "$QNAME" 2>&1) || true
    echo "$out" >>"$STEP_LOG"
    [ "$(echo "$out" | awk '{ print $1 }' | head -n 1)" = "$ANSWER" ] ||
        why "getent hosts $QNAME gave '$out', expected $ANSWER"
    echo "\$ getent hosts $UPSTREAM_NAME" >>"$STEP_LOG"
    out=$(timeout 20 getent hosts "$UPSTREAM_NAME" 2>&1) || true
    echo "$out" >>"$STEP_LOG"
    [ "$(echo "$out" | awk '{ print $1 }' | head -n 1)" = "$UPSTREAM_ANSWER" ] ||
        why "getent hosts $UPSTREAM_NAME gave '$out', expected $UPSTREAM_ANSWER"
}

# The site's DNS server down: upstream-dns is drift, the consul domain keeps
# resolving (consul-dns ok); back up, check is clean again.
step_upstream_down() {
    run systemctl stop nodeprep-test-upstream
    np --format json check
    cp "$NP_OUT" "$RUN_DIR/upstream-down.json"
    expect_rc 2
    expect_json "$NP_OUT" '[p["status"] for p in d["probes"] if p["id"] == "upstream-dns"]' "['drift']"
    expect_json "$NP_OUT" '[p["status"] for p in d["probes"] if p["id"] == "consul-dns"]' "['ok']"
    expect_json "$NP_OUT" '[p["status"] for p in d["probes"] if p["id"] == "host-dns"]' "['ok']"
    run systemctl start nodeprep-test-upstream
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# With dns.backend = "resolved": systemd-resolved itself answers on the link
# address (no dnsmasq), the consul domain from the agent, the rest from the
# site's server.
step_resolved_chain() {
    ! systemctl cat dnsmasq.service >/dev/null 2>&1 || why "dnsmasq.service exists on the resolved-podman host"
    run cat /etc/systemd/resolved.conf.d/nodeprep.conf
    run ss -Hlnup 'sport = :53'
    ss -Hlnup 'sport = :53' | grep "$LINK_ADDR:53" | grep -q systemd-resolve ||
        why "systemd-resolved does not listen on $LINK_ADDR:53"
    local out
    for server in "$LINK_ADDR" 127.0.0.53; do
        out=$(dig_short "$server" 53) || true
        echo "\$ dig @$server $QNAME +short: $out" >>"$STEP_LOG"
        [ "$out" = "$ANSWER" ] || why "dig @$server $QNAME answered '$out', expected $ANSWER"
        out=$(dig @"$server" "$UPSTREAM_NAME" +short +time=2 +tries=2 2>&1) || true
        echo "\$ dig @$server $UPSTREAM_NAME +short: $out" >>"$STEP_LOG"
        [ "$out" = "$UPSTREAM_ANSWER" ] || why "dig @$server $UPSTREAM_NAME answered '$out', expected $UPSTREAM_ANSWER"
    done
    run resolvectl dns dummy0
    run resolvectl domain dummy0
}

# http_get URL: the body of an HTTP GET, through python3 (there for
# cloud-init).
http_get() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

# The service discovery story (issue: a published port is registered and
# found by name): a `web` container publishes a port; the registrator
# STAND-IN registers it with the agent STAND-IN at the host's address; a
# second container, without --dns, resolves web.service.consul (A and SRV)
# and reads the catalog through $CONSUL_HTTP_ADDR; when web stops, the name
# is gone. These are stand-ins (NOT registrator, NOT Consul): the story shows
# nodeprep's wiring (link address, DNS chain, -ip, the consul:// address,
# CONSUL_HTTP_ADDR), not real Consul.
step_service_discovery() {
    local t out
    run docker run -d --name web -e SERVICE_NAME=web -p 8080:80 "$WORKLOAD_IMAGE"
    t=$(wait_for 20 sh -c "dig @$LINK_ADDR web.service.consul +short +time=1 +tries=1 | grep -qx $HOST_IP") ||
        why "web.service.consul did not resolve to $HOST_IP within 20 s of docker run"
    log "registered and resolvable after ${t}s"
    run docker logs registrator
    expect_nslookup default web.service.consul "$HOST_IP"
    expect_nslookup "$TEST_NET" web.service.consul "$HOST_IP"
    echo "\$ docker run --rm $BUSYBOX_IMAGE nslookup -type=SRV web.service.consul" >>"$STEP_LOG"
    out=$(timeout 60 "$ENGINE" run --rm "$BUSYBOX_IMAGE" nslookup -type=SRV web.service.consul 2>&1) || true
    echo "$out" >>"$STEP_LOG"
    echo "$out" | grep -Eq '\b8080\b' || why "the SRV record of web.service.consul does not give the published port 8080: $(echo "$out" | tr '\n' ' ')"
    # The HTTP API at $CONSUL_HTTP_ADDR, from a container given that variable
    # as login shells get it from /etc/environment.
    echo "\$ docker run --rm -e CONSUL_HTTP_ADDR=$LINK_ADDR:8500 $BUSYBOX_IMAGE wget -qO- http://\$CONSUL_HTTP_ADDR/v1/catalog/service/web" >>"$STEP_LOG"
    out=$(timeout 60 "$ENGINE" run --rm -e "CONSUL_HTTP_ADDR=$LINK_ADDR:8500" "$BUSYBOX_IMAGE" \
        sh -c 'wget -qO- "http://$CONSUL_HTTP_ADDR/v1/catalog/service/web"' 2>&1) || true
    echo "$out" >"$RUN_DIR/catalog-web.json"
    echo "$out" >>"$STEP_LOG"
    expect_json "$RUN_DIR/catalog-web.json" '[(s["ServiceName"], s["ServiceAddress"], s["ServicePort"]) for s in d]' "[('web', '$HOST_IP', 8080)]"
    run docker stop web
    t=$(wait_for 20 sh -c "! dig @$LINK_ADDR web.service.consul +short +time=1 +tries=1 | grep -q ." ) ||
        why "web.service.consul still resolves 20 s after web stopped"
    log "gone ${t}s after docker stop"
    run docker rm web
}

# A client whose servers are unreachable has no leader: check reports
# consul-http drift "no leader", and apply still exits 0 (converged).
step_no_leader() {
    run systemctl stop nodeprep-test-servers
    np_until 30 2 --format json check
    expect_rc 2
    expect_json "$NP_OUT" '[p["status"] for p in d["probes"] if p["id"] == "consul-http"]' "['drift']"
    grep -q 'no leader' "$NP_OUT" || why "consul-http does not say \"no leader\""
    np --format json apply
    expect_rc 0
    expect_json "$NP_OUT" '[p["status"] for p in d["probes"] if p["id"] == "consul-http"]' "['drift']"
    run systemctl start nodeprep-test-servers
    np_until 60 0 --format json check
    expect_rc 0
}

# The host as a single server (bootstrap_expect = 1) leads itself: green.
step_single_server() {
    local toml=/etc/nodeprep/nodeprep.toml
    cp "$toml" "$RUN_DIR/nodeprep.toml.client"
    python3 - "$toml" <<'PY'
import re, sys
p = sys.argv[1]
text = open(p).read()
text = text.replace('role = "client"', 'role = "server"\nbootstrap_expect = 1')
text = re.sub(r'^retry_join = .*\n', '', text, flags=re.M)
open(p, "w").write(text)
PY
    run cat "$toml"
    run systemctl stop nodeprep-test-servers
    np_planned apply
    expect_rc 0
    grep -q 'restart container consul' "$NP_OUT" || why "apply did not restart consul after its config changed"
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
    grep -q "leader $HOST_IP:8300" "$NP_OUT" || why "the single server does not lead itself"
    cp "$RUN_DIR/nodeprep.toml.client" "$toml"
    run systemctl start nodeprep-test-servers
    np_planned apply
    expect_rc 0
    np_until 60 0 --format json check
    expect_rc 0
}

# check --report-consul keeps a TTL check on the agent: passing after a
# clean audit, critical by itself once the TTL passes without another.
step_report_ttl() {
    local toml=/etc/nodeprep/nodeprep.toml out
    cp "$toml" "$RUN_DIR/nodeprep.toml.before-ttl"
    printf '\n[report]\nttl_secs = 15\n' >>"$toml"
    np --format json check --report-consul
    expect_rc 0
    expect_json "$NP_OUT" 'd["consul_report"]["status"]' passing
    http_get "http://$LINK_ADDR:8500/v1/agent/checks" >"$RUN_DIR/checks.json"
    run cat "$RUN_DIR/checks.json"
    expect_json "$RUN_DIR/checks.json" 'd["nodeprep"]["Status"]' passing
    expect_json "$RUN_DIR/checks.json" 'd["nodeprep"]["ServiceID"]' nodeprep
    log "waiting 20 s, past the 15 s TTL, without an audit"
    sleep 20
    http_get "http://$LINK_ADDR:8500/v1/agent/checks" >"$RUN_DIR/checks.json"
    run cat "$RUN_DIR/checks.json"
    expect_json "$RUN_DIR/checks.json" 'd["nodeprep"]["Status"]' critical
    expect_json "$RUN_DIR/checks.json" '"TTL expired" in d["nodeprep"]["Output"]' True
    cp "$RUN_DIR/nodeprep.toml.before-ttl" "$toml"
}

# The chain checks of this host's backend.
step_dns_chain() {
    if [ "$BACKEND" = resolved ]; then
        step_resolved_chain
    else
        step_dnsmasq_chain
    fi
}

# dockerd reads daemon.json only at start. With a container of someone
# else's running, apply converges the file but does not restart dockerd
# (docker.restart = "when-idle"), and check reports the restart as pending;
# with docker.restart = "always" apply restarts it.
step_docker_restart_policy() {
    local pid_before
    run docker run -d --name foreign --restart no "$BUSYBOX_IMAGE" sleep 3600
    # Someone drops the dns key: a change dockerd must restart to see.
    python3 -c 'import json; p="/etc/docker/daemon.json"; d=json.load(open(p)); d.pop("dns", None); json.dump(d, open(p, "w"))'
    run cat /etc/docker/daemon.json
    pid_before=$(cat /var/run/docker.pid)
    np_planned apply
    expect_rc 0
    expect_json "$NP_OUT" '[r["status"] for r in d["resources"] if r["id"] == "docker-dns"]' "['changed']"
    grep -q 'dockerd must restart' "$NP_OUT" || why "apply did not say the dockerd restart is pending"
    [ "$(cat /var/run/docker.pid)" = "$pid_before" ] || why "apply restarted dockerd although a foreign container runs"
    [ "$(docker inspect -f '{{.State.Running}}' foreign)" = true ] || why "the foreign container stopped"
    np --format json check --no-probes
    expect_rc 2
    expect_json "$NP_OUT" "$DRIFTED" "docker-dns"
    # The operator allows restarts.
    printf '\n[docker]\nrestart = "always"\n' >>/etc/nodeprep/nodeprep.toml
    run cat /etc/nodeprep/nodeprep.toml
    np_planned apply
    expect_rc 0
    grep -q 'restart docker.service' "$NP_OUT" || why "apply with docker.restart = always did not restart dockerd"
    [ "$(cat /var/run/docker.pid)" != "$pid_before" ] || why "dockerd has the pid of before: not restarted"
    python3 - /etc/nodeprep/nodeprep.toml <<'PY'
import sys
p = sys.argv[1]
text = open(p).read()
open(p, "w").write(text.replace('\n[docker]\nrestart = "always"\n', ""))
PY
    run docker rm -f foreign
    np_until 90 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# A login shell gets CONSUL_HTTP_ADDR from /etc/environment (pam_env).
step_login_env() {
    grep -qx "CONSUL_HTTP_ADDR=$LINK_ADDR:8500" /etc/environment ||
        why "/etc/environment has no line CONSUL_HTTP_ADDR=$LINK_ADDR:8500"
    { echo "--- /etc/environment"; cat /etc/environment; } >>"$STEP_LOG"
    local out
    # Without it in this service's own environment, so that only the login
    # (pam_env reading /etc/environment) can put it there.
    echo "\$ env -u CONSUL_HTTP_ADDR su -l root -c 'echo \$CONSUL_HTTP_ADDR'" >>"$STEP_LOG"
    out=$(env -u CONSUL_HTTP_ADDR su -l root -c 'printf "%s\n" "${CONSUL_HTTP_ADDR-<unset>}"' 2>&1) || true
    echo "$out" >>"$STEP_LOG"
    [ "$out" = "$LINK_ADDR:8500" ] || why "a login shell sees CONSUL_HTTP_ADDR='$out', expected $LINK_ADDR:8500"
    out=$(env -u CONSUL_HTTP_ADDR bash -c 'printf "%s\n" "${CONSUL_HTTP_ADDR-<unset>}"' 2>&1) || true
    echo "# a non-login shell of this unit: CONSUL_HTTP_ADDR=$out" >>"$STEP_LOG"
}

# After the reboot (cloud-init's runcmd is per-instance: it does not run
# again; the only apply of this boot is the package's boot unit, see
# boot-unit-repaired): networkd configures dummy0 from nodeprep's files,
# dnsmasq runs, dockerd brought both containers back (restart policy
# always), and the audit is clean.
step_reboot_persists() {
    local t
    # The boot unit found networkd's files in place (it repaired only the
    # drift left before the reboot).
    grep -Eq '^ok +network ' "$RUN_DIR/boot-unit.log" 2>/dev/null ||
        why "the boot unit's apply did not find network ok: $(grep -E ' network ' "$RUN_DIR/boot-unit.log" 2>&1)"
    local lines
    lines=$(cloud_apply_lines)
    [ "$lines" = "$(cat "$STATE/cloud-apply-lines" 2>/dev/null)" ] ||
        why "$CLOUD_OUTPUT has $lines apply lines, $(cat "$STATE/cloud-apply-lines" 2>/dev/null) at the end of boot 1: cloud-init ran nodeprep again"
    # networkd may still be configuring the link when this unit starts.
    t=$(wait_for 30 dummy0_has_addr) ||
        why "after the reboot dummy0 lacks $LINK_ADDR/32 (waited 30s): $(ip -br addr show dev dummy0 2>&1)"
    log "dummy0 had $LINK_ADDR/32 after waiting ${t}s"
    run ip -d addr show dev dummy0
    ip -d link show dev dummy0 | grep -qw dummy || why "dummy0 is not a dummy link after the reboot"
    if [ "$NETWORK" = networkmanager ]; then
        # NetworkManager made dummy0 at boot from nodeprep's keyfile (no
        # networkd on this host).
        run nmcli -f GENERAL,IP4 device show dummy0
        t=$(wait_for 20 nm_profile_active) ||
            why "NetworkManager has not activated nodeprep's profile ($KEYFILE) on dummy0: $(nm_dummy0_state)"
        [ "$(systemctl is-enabled systemd-networkd 2>&1)" != enabled ] ||
            why "systemd-networkd is enabled on the NetworkManager host"
        [ ! -e /etc/systemd/network/10-dummy0.netdev ] || why "networkd files were written on the NetworkManager host"
    else
        networkctl status dummy0 --no-pager >>"$STEP_LOG" 2>&1 || true
        t=$(wait_for 20 sh -c 'networkctl list --no-legend dummy0 | grep -qw configured') ||
            why "networkctl does not show dummy0 as configured: $(networkctl list --no-legend 2>&1 | tr -s ' ' | paste -sd';')"
    fi
    if [ "$BACKEND" = dnsmasq ]; then
        t=$(wait_for 20 systemctl is-active --quiet dnsmasq) ||
            why "dnsmasq is $(systemctl is-active dnsmasq) after the reboot"
    else
        t=$(wait_for 20 systemctl is-active --quiet systemd-resolved) ||
            why "systemd-resolved is $(systemctl is-active systemd-resolved) after the reboot"
    fi
    t=$(wait_for 60 containers_running) ||
        why "the containers are not both running 60s into the scenario: $(container_state "$CONSUL"); $(container_state "$REGISTRATOR")"
    log "both containers running after waiting ${t}s"
    if [ "$ENGINE" = podman ]; then
        # Podman has no daemon to bring restart-always containers back:
        # podman-restart.service, which nodeprep enabled (podman-boot), did,
        # before the boot unit's apply (ordered after it) found them running.
        run systemctl status --no-pager podman-restart.service
        [ "$(systemctl is-enabled podman-restart.service 2>&1)" = enabled ] ||
            why "podman-restart.service is $(systemctl is-enabled podman-restart.service 2>&1), expected enabled (podman-boot)"
        [ "$(unit_prop podman-restart.service ExecMainStartTimestampMonotonic)" != 0 ] ||
            why "podman-restart.service did not run in this boot"
        grep -Eq '^ok +consul ' "$RUN_DIR/boot-unit.log" && grep -Eq '^ok +registrator ' "$RUN_DIR/boot-unit.log" ||
            why "the boot unit's apply did not find both containers running: $(grep -E ' (consul|registrator) ' "$RUN_DIR/boot-unit.log" | paste -sd';')"
    fi
    container_identity >"$RUN_DIR/containers.boot2"
    { echo "--- containers at the end of boot 1"; cat "$STATE/containers.phase1"; echo "--- now"; cat "$RUN_DIR/containers.boot2"; } >>"$STEP_LOG"
    # Started again in this boot (by dockerd), same containers.
    local c
    for c in "$CONSUL" "$REGISTRATOR"; do
        [ "$(field_of "$STATE/containers.phase1" "$c" id)" = "$(field_of "$RUN_DIR/containers.boot2" "$c" id)" ] ||
            why "container $c is not the one of boot 1 (recreated?)"
        [ "$(field_of "$STATE/containers.phase1" "$c" started)" != "$(field_of "$RUN_DIR/containers.boot2" "$c" started)" ] ||
            why "container $c has the StartedAt of boot 1: it was not started again in this boot"
    done
    np_until 60 0 --format json check
    cp "$NP_OUT" "$RUN_DIR/check2.json"
    echo "exit $NP_RC after ${NP_WAITED}s and $NP_TRIES tries" >"$RUN_DIR/check2.waited"
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

step_apply_after_reboot_noop() {
    container_identity >"$RUN_DIR/containers.before"
    np --format json apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["changed"]' 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    snapshot >"$RUN_DIR/snap.after-reboot"
    # As the host booted: after the boot unit's repair (boot-unit-repaired).
    if ! diff -u "$RUN_DIR/snap.boot2" "$RUN_DIR/snap.after-reboot" >>"$STEP_LOG"; then
        why "files changed between the start of the scenario in boot 2 and the apply (diff above)"
    fi
    container_identity >"$RUN_DIR/containers.after"
    if ! diff -u "$RUN_DIR/containers.before" "$RUN_DIR/containers.after" >>"$STEP_LOG"; then
        why "a no-op apply after the reboot restarted a container (diff above)"
    fi
}

# Three kinds of drift at once: the link deleted, registrator stopped, the
# dnsmasq file edited. check names exactly those three; apply repairs them.
step_drift_detected_and_repaired() {
    dnsmasq_identity >"$RUN_DIR/dnsmasq.before-drift"
    run ip link del dummy0
    [ "$NETWORK" != networkmanager ] || note "drift: right after ip link del dummy0, NetworkManager says: $(nm_dummy0_state)"
    run docker stop "$REGISTRATOR"
    echo "\$ echo '# an operator's edit' >>/etc/dnsmasq.d/consul.conf" >>"$STEP_LOG"
    echo "# an operator's edit (nodeprep VM test)" >>/etc/dnsmasq.d/consul.conf
    np --format json check --no-probes
    cp "$NP_OUT" "$RUN_DIR/drift.json"
    expect_rc 2
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    # With systemd-resolved, the link's routing of the consul domain went
    # with the link: the resolver resource drifts too.
    local expected=dnsmasq,link,registrator
    # NetworkManager: its profile is no longer active on a link that is
    # gone, which is network's drift.
    [ "$NETWORK" != networkmanager ] || expected=dnsmasq,link,network,registrator
    ! systemctl is-active --quiet systemd-resolved || expected=$expected,resolver
    expect_json "$NP_OUT" "$DRIFTED" "$expected"
    np_planned apply
    cp "$NP_OUT" "$RUN_DIR/repair.json"
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '",".join(sorted(r["id"] for r in d["resources"] if r["status"] == "changed"))' "$expected"
    expect_rc 0
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 right after apply"
    ! grep -q "operator's edit" /etc/dnsmasq.d/consul.conf || why "apply left the edited line in /etc/dnsmasq.d/consul.conf"
    [ "$(dnsmasq_identity)" != "$(cat "$RUN_DIR/dnsmasq.before-drift")" ] ||
        why "apply rewrote /etc/dnsmasq.d/consul.conf but did not restart dnsmasq"
    run docker inspect -f '{{.State.Status}}' "$REGISTRATOR"
    # The consul stand-in comes back on its own once dummy0 is back (or was
    # never gone: its sockets stay bound to the address): poll.
    np_until 60 0 --format json check
    cp "$NP_OUT" "$RUN_DIR/after-repair.json"
    echo "exit $NP_RC after ${NP_WAITED}s and $NP_TRIES tries" >"$RUN_DIR/after-repair.waited"
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# Drift repaired while systemd-networkd runs (it does not in boot 1): the
# address and the .network file gone, `apply` puts both back and has
# networkd reread its files (networkctl reload), and networkd then keeps
# the address.
step_repair_with_networkd_active() {
    run ip addr del "$LINK_ADDR/32" dev dummy0
    run rm /etc/systemd/network/10-dummy0.network
    np --format json check --no-probes
    expect_rc 2
    expect_json "$NP_OUT" "$DRIFTED" "link,network"
    np_planned apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '[r["status"] for r in d["resources"] if r["id"] == "link"]' "['changed']"
    expect_json "$NP_OUT" '[r["status"] for r in d["resources"] if r["id"] == "network"]' "['changed']"
    [ -f /etc/systemd/network/10-dummy0.network ] || why "10-dummy0.network was not written back"
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 right after apply"
    local t
    t=$(wait_for 20 sh -c 'networkctl list --no-legend dummy0 | grep -qw configured') ||
        why "networkd did not configure dummy0 again after the reload: $(networkctl list --no-legend 2>&1 | tr -s ' ' | paste -sd';')"
    # Give networkd a moment to act on the reload, then look again.
    sleep 2
    run ip -d addr show dev dummy0
    dummy0_has_addr || why "dummy0 lost $LINK_ADDR/32 after networkd reloaded"
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# Drift made with NetworkManager's own tool: the profile deleted (nmcli
# deletes its keyfile, and deactivating it deletes the dummy0 that
# NetworkManager made), then, once repaired, the link deleted alone. Each
# time check names the drift and apply repairs it: the keyfile written
# back, loaded, and the profile active on dummy0 again.
step_repair_with_networkmanager() {
    local uuid t
    uuid=$(nmcli -t -f UUID,FILENAME connection show 2>/dev/null | awk -F: -v f="$KEYFILE" '$2 == f { print $1 }')
    [ -n "$uuid" ] || why "NetworkManager has no profile from $KEYFILE: $(nmcli -t -f NAME,UUID,FILENAME connection show 2>&1 | paste -sd';')"
    run nmcli connection delete "$uuid"
    [ ! -e "$KEYFILE" ] || why "nmcli connection delete left $KEYFILE"
    note "repair-with-networkmanager: after nmcli connection delete: dummy0 $(ip -br addr show dev dummy0 2>&1 | tr -s ' ')"
    np --format json check --no-probes
    expect_rc 2
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '"network" in [r["id"] for r in d["resources"] if r["status"] == "drift"]' True
    note "repair-with-networkmanager: drift after the profile was deleted: $(json "$NP_OUT" "$DRIFTED" 2>&1)"
    np_planned apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    [ "$(stat -c '%a %U' "$KEYFILE" 2>&1)" = "600 root" ] || why "$KEYFILE is $(stat -c '%a %U' "$KEYFILE" 2>&1) after the repair, expected 600 root"
    t=$(wait_for 20 nm_profile_active) ||
        why "after the repair NetworkManager has not activated the profile on dummy0: $(nm_dummy0_state)"
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 after the repair"
    np_until 60 0 --format json check --no-probes
    expect_rc 0

    run ip link del dummy0
    note "repair-with-networkmanager: right after ip link del dummy0: $(nm_dummy0_state); link: $(ip -br link show dev dummy0 2>&1 | tr -s ' ')"
    np --format json check --no-probes
    expect_rc 2
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    note "repair-with-networkmanager: drift after the link was deleted: $(json "$NP_OUT" "$DRIFTED" 2>&1)"
    expect_json "$NP_OUT" '"link" in [r["id"] for r in d["resources"] if r["status"] == "drift"]' True
    np_planned apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    t=$(wait_for 20 nm_profile_active) ||
        why "after the repair NetworkManager has not activated the profile on dummy0: $(nm_dummy0_state)"
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 after the repair"
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
}

# `nodeprep remove` undoes the layout, doing what its dry run listed:
# nodeprep's containers, files, link and units go; dnsmasq is restarted
# without nodeprep's file; the data dir stays.
step_remove() {
    local f t
    np_planned remove
    cp "$NP_OUT" "$RUN_DIR/remove.json"
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '",".join(r["id"] for r in d["resources"])' \
        "registrator,consul,podman-boot,docker-dns,environment,consul-config,resolver,dnsmasq,network,link"
    # The files nodeprep merged into are as they were before it.
    run cmp "$STATE/pre/daemon.json" /etc/docker/daemon.json
    if [ -L "$STATE/pre/resolv.conf" ]; then
        # resolved's stub link (a relative link: compare where it points).
        [ "$(readlink /etc/resolv.conf)" = "$(readlink "$STATE/pre/resolv.conf")" ] ||
            why "/etc/resolv.conf points to '$(readlink /etc/resolv.conf)', it pointed to '$(readlink "$STATE/pre/resolv.conf")' before nodeprep"
    else
        run cmp "$STATE/pre/resolv.conf" /etc/resolv.conf
    fi
    run docker ps -a --filter label=nodeprep.managed --format '{{.Names}}'
    [ -z "$(docker ps -aq --filter label=nodeprep.managed)" ] || why "containers labelled nodeprep.managed are left"
    for f in "${FILES[@]}"; do
        [ "$f" = /etc/environment ] && continue
        [ ! -e "$f" ] || why "$f is still there after remove"
    done
    ! ip link show dev dummy0 >/dev/null 2>&1 || why "dummy0 is still there after remove (nodeprep created it)"
    [ -d /var/lib/consul ] || why "remove deleted the consul data dir (no --purge-data)"
    if systemctl is-active --quiet systemd-resolved; then
        # Before nodeprep, Debian's dnsmasq failed at boot beside resolved
        # (its packaged configuration wants port 53 of every address);
        # nodeprep started it, so remove stops it: as it was, not running,
        # and no failed restart.
        systemctl status --no-pager dnsmasq >>"$STEP_LOG" 2>&1 || true
        ! systemctl is-active --quiet dnsmasq || why "dnsmasq still runs after remove (nodeprep started it)"
        [ "$(unit_prop dnsmasq Result)" = success ] || why "dnsmasq's result is $(unit_prop dnsmasq Result) after remove"
        grep -q "stop dnsmasq.service" "$NP_OUT" || why "remove did not report stopping dnsmasq"
    fi
    if [ "$NETWORK" = networkmanager ]; then
        run nmcli -t -f NAME,UUID,FILENAME connection show
        ! nmcli -t -f FILENAME connection show | grep -qx "$KEYFILE" ||
            why "NetworkManager still has the profile of $KEYFILE after remove"
        [ "$(systemctl is-enabled systemd-networkd 2>&1)" = "$(cat "$STATE/pre/networkd")" ] ||
            why "systemd-networkd is $(systemctl is-enabled systemd-networkd 2>&1) after remove, it was $(cat "$STATE/pre/networkd")"
    fi
    if ! systemctl is-active --quiet systemd-resolved; then
        t=$(wait_for 20 systemctl is-active --quiet dnsmasq) ||
            why "dnsmasq is $(systemctl is-active dnsmasq) after remove"
    fi
}

# After remove and a reboot, the host is as it was before nodeprep.
step_removed_after_reboot() {
    local pre=$STATE/pre want t f
    ! ip link show dev dummy0 >/dev/null 2>&1 || why "dummy0 is back after the reboot: $(ip -br addr show dev dummy0 2>&1)"
    want=$(cat "$pre/networkd")
    run systemctl is-enabled systemd-networkd || true
    [ "$(systemctl is-enabled systemd-networkd 2>&1)" = "$want" ] ||
        why "systemd-networkd is $(systemctl is-enabled systemd-networkd 2>&1), it was $want before nodeprep"
    t=$(wait_for 20 systemctl is-active --quiet dnsmasq) ||
        why "dnsmasq is $(systemctl is-active dnsmasq) after the reboot"
    [ ! -e /etc/dnsmasq.d/consul.conf ] || why "/etc/dnsmasq.d/consul.conf is back"
    run ss -Hlnu 'sport = :53'
    ! ss -Hlnu 'sport = :53' | grep -q "$LINK_ADDR:53" || why "dnsmasq still listens on $LINK_ADDR:53"
    run docker ps -a --no-trunc
    [ -z "$(docker ps -aq --filter label=nodeprep.managed)" ] || why "containers labelled nodeprep.managed are back"
    if [ -e "$pre/environment" ]; then
        run cmp "$pre/environment" /etc/environment
    else
        [ ! -e /etc/environment ] || why "/etc/environment exists; it did not before nodeprep"
    fi
    [ -d /var/lib/consul ] || why "the consul data dir is gone"
    run cmp "$pre/daemon.json" /etc/docker/daemon.json
    run cmp "$pre/resolv.conf" /etc/resolv.conf
    [ ! -e /var/lib/nodeprep/state.json ] || why "nodeprep's record is still there: $(cat /var/lib/nodeprep/state.json)"
    # The drift step of boot 2 edited nodeprep's dnsmasq file: that edit is
    # kept, never lost.
    run ls -lR /var/lib/nodeprep
    grep -q "operator's edit" /var/lib/nodeprep/edited/etc/dnsmasq.d/consul.conf ||
        why "the operator's edit of the dnsmasq file is not kept in /var/lib/nodeprep/edited"
    for f in "${FILES[@]}"; do
        [ "$f" = /etc/environment ] && continue
        [ ! -e "$f" ] || why "$f is back after the reboot"
    done
}

# Applying again converges the host as on first boot.
step_apply_again() {
    np_planned apply
    expect_rc 0
    expect_json "$NP_OUT" 'd["summary"]["failed"]' 0
    expect_json "$NP_OUT" '",".join(sorted(r["id"] for r in d["resources"] if r["status"] == "changed"))' \
        "consul,consul-config,dnsmasq,docker-dns,environment,link,network,registrator,resolver"
    dummy0_has_addr || why "dummy0 lacks $LINK_ADDR/32 after apply"
    np_until 60 0 --format json check
    expect_rc 0
    expect_all_ok "$NP_OUT"
    expect_forwarded "$LINK_ADDR"
}

# The Debian package's steps (after the helpers above, which they use).
# shellcheck source=package-steps.sh
. /usr/local/lib/nodeprep-test/package-steps.sh

# ------------------------------------------------------------- phases ----

# The package's audit timer runs `nodeprep check --report-consul` 5 minutes
# after boot. The plain host tests it (package-steps.sh); on the other hosts
# it is stopped for the boot, so that its reports do not race the steps that
# report to the agent themselves (report-ttl, no-leader).
pause_audit_timer() {
    [ "$VARIANT" != plain ] || return 0
    systemctl stop nodeprep-check.timer nodeprep-check.service 2>&1 | note_lines "stop the audit timer"
    note "boot $boots: the package's audit timer is stopped for this boot (tested on the plain host)"
}

phase1() {
    pause_audit_timer
    note "boot 1: scenario starts at uptime $(uptime_s)s; kernel $(uname -r); $(systemctl --version | head -n 1); $(dnsmasq --version | head -n 1); docker $(docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>&1)"
    note "boot 1: cloud-final.service started at uptime $(awk -v a="$(unit_prop cloud-final ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s, ended at $(awk -v a="$(unit_prop cloud-final ExecMainExitTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s; docker started at $(awk -v a="$(unit_prop docker ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s"
    # What nodeprep printed under cloud-init (runcmd).
    sed -n '/^Loaded image\|^apply: \|^check: \|^ok \|^changed \|^drift \|^failed \|^skipped \|nodeprep/p' "$CLOUD_OUTPUT" 2>&1 |
        note_lines "boot 1 cloud-init-output"
    grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log 2>&1 | cut -c1-300 | note_lines "boot 1 cloud-init.log warnings"
    note_host_state "boot 1 after cloud-init"

    run_step cloud-init-done step_cloud_init_done
    note_lines "boot 1 cloud-init status --long" <"$RUN_DIR/cloud-init-status" 2>/dev/null || true
    run_step check-all-ok step_check_all_ok
    note "boot 1: check-all-ok: polling nodeprep check ended with $(cat "$RUN_DIR/check1.waited" 2>/dev/null)"
    note_report "boot 1 check" "$RUN_DIR/check1.json"
    run_step apply-second-noop step_apply_second_noop
    run_step dns-chain step_dns_chain
    note "boot 1: a name outside the consul domain from dnsmasq on 127.0.0.1 (no upstream configured): $(cat "$RUN_DIR/other-name-status" 2>/dev/null)"
    run_step container-dns step_container_dns
    run_step host-dns step_host_dns
    run_step upstream-down step_upstream_down
    run_step login-env step_login_env
    if [ "$VARIANT" = nm ]; then
        run_step service-discovery step_service_discovery
        run_step report-ttl step_report_ttl
    fi

    note_host_state "boot 1 end"
    note_boot_journal "boot 1 end"
    note_container_logs "boot 1 end"
    snapshot >"$STATE/snap.phase1"
    container_identity >"$STATE/containers.phase1"
    cloud_apply_lines >"$STATE/cloud-apply-lines"

    if [ "$VARIANT" = plain ]; then
        run_step package-installed step_package_installed
        note_lines "boot 1 dpkg -V nodeprep" <"$RUN_DIR/dpkg-verify" 2>/dev/null || true
        run_step man-and-completion step_man_and_completion
        run_step check-timer-reports step_check_timer_reports
        note "boot 1: the agent's nodeprep check after drift: $(cat "$RUN_DIR/agent-check" 2>/dev/null)"
    fi
}

phase2() {
    pause_audit_timer
    note "boot 2: scenario starts at uptime $(uptime_s)s"
    # How the previous boot shut down (the journal is persistent): what
    # stopped last, and anything that had to be killed.
    journalctl -b -1 -o short-monotonic --no-pager 2>&1 | grep -E 'timed out|SIGKILL|Killing|Stopped|Deactivated' | tail -n 12 |
        cut -c1-200 | note_lines "boot 2: end of boot 1's shutdown"
    cloud-init status --long 2>&1 | note_lines "boot 2 cloud-init"
    note_host_state "boot 2 before nodeprep"
    networkctl list --no-legend 2>&1 | note_lines "boot 2 networkctl"
    # nodeprep enabled systemd-networkd and keeps its wait-online service
    # disabled: how long did the boot wait for network-online.target?
    local wo_start wo_end
    wo_start=$(unit_prop systemd-networkd-wait-online ExecMainStartTimestampMonotonic)
    wo_end=$(unit_prop systemd-networkd-wait-online ExecMainExitTimestampMonotonic)
    note "boot 2: systemd-networkd-wait-online is-enabled=$(systemctl is-enabled systemd-networkd-wait-online 2>&1) active=$(systemctl is-active systemd-networkd-wait-online 2>&1) result=$(unit_prop systemd-networkd-wait-online Result), ran $(awk -v a="${wo_start:-0}" -v b="${wo_end:-0}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')s; network-online.target reached at uptime $(awk -v a="$(unit_prop network-online.target ActiveEnterTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s; dnsmasq started at $(awk -v a="$(unit_prop dnsmasq ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s, docker at $(awk -v a="$(unit_prop docker ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s, cloud-final ended at $(awk -v a="$(unit_prop cloud-final ExecMainExitTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s"
    journalctl -b -u systemd-networkd -o short-monotonic --no-pager 2>&1 | grep -i 'dummy0' | note_lines "boot 2 networkd journal"
    note "boot 2: nodeprep.service started at uptime $(awk -v a="$(unit_prop nodeprep.service ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s, ended at $(awk -v a="$(unit_prop nodeprep.service ExecMainExitTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s"
    snapshot >"$RUN_DIR/snap.boot2"

    if [ "$VARIANT" = plain ]; then
        run_step boot-unit-repaired step_boot_unit_repaired
    else
        journalctl -b -u nodeprep.service -o cat --no-pager >"$RUN_DIR/boot-unit.log" 2>&1
    fi
    note_lines "boot 2 nodeprep.service" <"$RUN_DIR/boot-unit.log" 2>/dev/null || true
    run_step reboot-persists step_reboot_persists
    note "boot 2: reboot-persists: polling nodeprep check ended with $(cat "$RUN_DIR/check2.waited" 2>/dev/null)"
    note_report "boot 2 check" "$RUN_DIR/check2.json"
    note "boot 2: containers at the end of boot 1: $(paste -sd';' "$STATE/containers.phase1" 2>/dev/null)"
    note "boot 2: containers after the reboot: $(paste -sd';' "$RUN_DIR/containers.boot2" 2>/dev/null)"
    note "boot 2: restarts since boot 1 (0: dockerd started each container once at boot and it stayed up): consul $(field_of "$RUN_DIR/containers.boot2" "$CONSUL" restarts), registrator $(field_of "$RUN_DIR/containers.boot2" "$REGISTRATOR" restarts); dummy0 configured by networkd at $(journalctl -b -u systemd-networkd -o short-monotonic --no-pager 2>/dev/null | grep -m1 'dummy0: Link UP' | cut -d']' -f1 | tr -d '[ ')s, docker started at $(awk -v a="$(unit_prop docker ExecMainStartTimestampMonotonic)" 'BEGIN { printf "%.1f", a / 1e6 }')s"
    run_step dns-after-reboot step_dns_chain
    run_step container-dns-after-reboot step_container_dns
    run_step host-dns-after-reboot step_host_dns
    run_step apply-after-reboot-noop step_apply_after_reboot_noop
    if [ "$VARIANT" = resolved-podman ]; then
        return
    fi
    run_step drift-detected-and-repaired step_drift_detected_and_repaired
    note_report "drift check" "$RUN_DIR/drift.json"
    note_report "repair apply" "$RUN_DIR/repair.json"
    note "boot 2: after the repair, polling nodeprep check ended with $(cat "$RUN_DIR/after-repair.waited" 2>/dev/null)"
    if [ "$NETWORK" = networkmanager ]; then
        run_step repair-with-networkmanager step_repair_with_networkmanager
    else
        run_step repair-with-networkd-active step_repair_with_networkd_active
    fi
    note_host_state "boot 2 end"
    note_boot_journal "boot 2 end"
    note_container_logs "boot 2 end"
    case $VARIANT in
        nm)
            run_step docker-restart-policy step_docker_restart_policy
            run_step no-leader step_no_leader
            run_step single-server step_single_server
            # Last: nothing of nodeprep's is left to test after it.
            run_step remove step_remove
            note_report "remove" "$RUN_DIR/remove.json"
            ;;
        plain)
            run_step upgrade-keeps-conffile step_upgrade_keeps_conffile
            run_step remove step_remove
            note_report "remove" "$RUN_DIR/remove.json"
            run_step package-removed step_package_removed
            ;;
    esac
}

phase3() {
    note "boot 3: scenario starts at uptime $(uptime_s)s"
    note_host_state "boot 3 before nodeprep"
    run_step removed-after-reboot step_removed_after_reboot
    run_step package-reinstalled step_package_reinstalled
    run_step apply-again step_apply_again
    note_host_state "boot 3 end"
    run_step apt-remove-keeps-layout step_apt_remove_keeps_layout
}

mkdir -p "$STATE"
boots=$(( $(cat "$STATE/boots" 2>/dev/null || echo 0) + 1 ))
echo "$boots" >"$STATE/boots"
phase=$(cat "$STATE/phase" 2>/dev/null || echo 1)
sync
echo "NODEPREP-BOOT $boots phase=$phase uptime=$(uptime_s)"

# The plain host goes through remove and a third boot (its dnsmasq runs
# without nodeprep's file, so "as before" includes a running dnsmasq); the
# other variants end after the reboot.
LAST_PHASE=2
[ "$VARIANT" != plain ] || LAST_PHASE=3
case $phase in
    1 | 2 | 3)
        "phase$phase"
        if [ "$phase" -lt "$LAST_PHASE" ]; then
            echo $((phase + 1)) >"$STATE/phase"
            sync
            echo "NODEPREP-REBOOTING uptime=$(uptime_s)"
            # What `systemctl reboot` does, minus its call to logind.
            systemctl start reboot.target --job-mode=replace-irreversibly --no-block
        else
            echo "done" >"$STATE/phase"
            sync
            scenario_end
            systemctl start poweroff.target --job-mode=replace-irreversibly --no-block
        fi
        ;;
    *)
        echo "NODEPREP-STEP unexpected-boot FAIL boot $boots after the scenario had ended (phase=$phase)"
        systemctl start poweroff.target --job-mode=replace-irreversibly --no-block
        ;;
esac
