#!/usr/bin/env bash
# Makes sure rootful Podman's Docker-compatible API answers on
# /run/podman/podman.sock, for nodeprep's Podman tests.
#
#   - it answers already: nothing to do;
#   - else: install Debian's podman when it is missing, then start
#     `podman system service --time=0 unix:///run/podman/podman.sock` in the
#     background (its own session, so it outlives the test that started it;
#     no systemd needed: podman.socket/podman.service do this on a real
#     host), log in $NODEPREP_TEST_PODMAN_LOG, pid in $PIDFILE, and wait up to
#     $NODEPREP_TEST_PODMAN_WAIT seconds for the socket.
#
# On a machine whose hard limits are below what Podman asks for by default
# (rootful: RLIMIT_NOFILE 1048576; runc then fails "error setting rlimit type
# 7: operation not permitted"), a test-only drop-in
# /etc/containers/containers.conf.d/00-nodeprep-test-ulimits.conf sets
# default_ulimits within them, before the service starts (the API service
# reads containers.conf once, when it starts).
#
# `--restart`: stop the service this script started and start it again (a
# test that changed containers.conf wants the service to read it).
#
# Prints what it did on stderr. Exit codes: 0 Podman answers; 77 no Podman
# can be had here (not root, no apt, install failed, the service did not
# come up). Concurrent callers serialise on a lock.
set -euo pipefail

SOCK=/run/podman/podman.sock
LOG=${NODEPREP_TEST_PODMAN_LOG:-/var/log/nodeprep-test-podman.log}
WAIT=${NODEPREP_TEST_PODMAN_WAIT:-60}
LOCK=${NODEPREP_TEST_PODMAN_LOCK:-/tmp/nodeprep-test-podman.lock}
PIDFILE=/run/nodeprep-test-podman.pid
ULIMITS=/etc/containers/containers.conf.d/00-nodeprep-test-ulimits.conf

say() { echo "ensure-podman: $*" >&2; }
cannot() { say "CANNOT HAVE PODMAN: $*"; exit 77; }

answers() {
    [ -S "$SOCK" ] || return 1
    [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" = OK ]
}

restart=0
[ "${1:-}" = --restart ] && restart=1

if [ "$restart" = 0 ] && answers; then
    say "Podman already answers on $SOCK"
    exit 0
fi

[ "$(id -u)" = 0 ] || cannot "not root (rootful Podman needs root)"
command -v flock >/dev/null 2>&1 || cannot "flock (util-linux) is missing"
command -v curl >/dev/null 2>&1 || cannot "curl is missing"

exec 9>"$LOCK"
flock -w $((WAIT + 600)) 9 || cannot "timed out waiting for $LOCK"

if [ "$restart" = 1 ] && [ -s "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null && grep -q podman "/proc/$pid/comm" 2>/dev/null; then
        say "stopping the Podman API service (pid $pid) to start it again"
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
elif answers; then
    say "Podman answers on $SOCK (started by a concurrent caller)"
    exit 0
fi

if ! command -v podman >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || cannot "podman is missing and there is no apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    t0=$(date +%s)
    say "podman is missing: installing it with apt-get"
    if ! apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends podman >>"$LOG.apt" 2>&1; then
        apt-get -o DPkg::Lock::Timeout=300 update >>"$LOG.apt" 2>&1 || cannot "apt-get update failed, see $LOG.apt"
        apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends podman >>"$LOG.apt" 2>&1 \
            || cannot "apt-get install podman failed, see $LOG.apt"
    fi
    say "installed podman in $(( $(date +%s) - t0 )) s ($(podman --version 2>/dev/null || true))"
fi

hard_nofile=$(ulimit -Hn)
if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt 1048576 ]; then
    mkdir -p "$(dirname "$ULIMITS")"
    want=$(printf '# nodeprep tests: this machine caps hard limits below Podman'"'"'s defaults.\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=16384:16384"]\n' "$hard_nofile" "$hard_nofile")
    if [ "$(cat "$ULIMITS" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$ULIMITS"
        say "hard RLIMIT_NOFILE is $hard_nofile: wrote $ULIMITS"
    fi
fi

mkdir -p "$(dirname "$SOCK")"
say "starting podman system service (log: $LOG)"
echo "=== $(date -Is) ensure-podman.sh starts podman system service" >>"$LOG"
t0=$(date +%s%N)
# 9>&-: the service must not inherit (and hold) the lock.
setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG" 2>&1 9>&- &
pid=$!
echo "$pid" >"$PIDFILE"
deadline=$(( $(date +%s) + WAIT ))
until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        cannot "the Podman API service exited before answering on $SOCK"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || cannot "Podman did not answer on $SOCK within $WAIT s"
    sleep 0.1
done
say "Podman $(podman --version | awk '{print $3}') (pid $pid) answers on $SOCK after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
