#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock, for nodeprep's
# container tests.
#
#   - an engine already answers: nothing to do;
#   - else: install Debian's docker.io when dockerd is missing, start
#     `dockerd --iptables=false` in the background (its own session, so it
#     outlives the test that started it), log in $NODEPREP_TEST_DOCKERD_LOG,
#     and wait up to $NODEPREP_TEST_DOCKERD_WAIT seconds for the socket.
#
# Prints what it did on stderr. Exit codes: 0 an engine answers; 77 no engine
# can be had here (not root, no apt, install failed, dockerd did not come up).
# Concurrent callers (test processes run in parallel) serialise on a lock.
set -euo pipefail

SOCK=/var/run/docker.sock
LOG=${NODEPREP_TEST_DOCKERD_LOG:-/var/log/nodeprep-test-dockerd.log}
WAIT=${NODEPREP_TEST_DOCKERD_WAIT:-60}
LOCK=${NODEPREP_TEST_DOCKER_LOCK:-/tmp/nodeprep-test-docker.lock}

say() { echo "ensure-dockerd: $*" >&2; }
cannot() { say "CANNOT HAVE A DOCKERD: $*"; exit 77; }

answers() {
    [ -S "$SOCK" ] || return 1
    if command -v curl >/dev/null 2>&1; then
        [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null)" = OK ]
    else
        timeout 5 docker -H "unix://$SOCK" version >/dev/null 2>&1
    fi
}

# Fast path without the lock: the common case once the engine runs.
if answers; then
    say "a Docker engine already answers on $SOCK"
    exit 0
fi

[ "$(id -u)" = 0 ] || cannot "not root (starting dockerd needs root)"
command -v flock >/dev/null 2>&1 || cannot "flock (util-linux) is missing"

exec 9>"$LOCK"
flock -w $((WAIT + 600)) 9 || cannot "timed out waiting for $LOCK (another ensure-dockerd.sh is stuck?)"

# Another caller may have started it while this one waited for the lock.
if answers; then
    say "a Docker engine answers on $SOCK (started by a concurrent caller)"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || cannot "dockerd is missing and there is no apt-get to install docker.io"
    export DEBIAN_FRONTEND=noninteractive
    t0=$(date +%s)
    say "dockerd is missing: installing docker.io with apt-get"
    if ! apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends docker.io >>"$LOG.apt" 2>&1; then
        say "install failed (package lists may be missing): running apt-get update first"
        apt-get -o DPkg::Lock::Timeout=300 update >>"$LOG.apt" 2>&1 || cannot "apt-get update failed, see $LOG.apt"
        apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends docker.io >>"$LOG.apt" 2>&1 \
            || cannot "apt-get install docker.io failed, see $LOG.apt"
    fi
    command -v dockerd >/dev/null 2>&1 || cannot "docker.io installed but dockerd is not on PATH"
    say "installed docker.io in $(( $(date +%s) - t0 )) s ($(dockerd --version 2>/dev/null || true))"
fi

# A dockerd that is alive but not answering yet (say, started by hand a moment
# ago): wait for it instead of starting a second one.
pid=""
if [ -s /var/run/docker.pid ]; then
    pid=$(cat /var/run/docker.pid)
    if ! kill -0 "$pid" 2>/dev/null || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != dockerd ]; then
        pid=""
    fi
fi

t0=$(date +%s%N)
if [ -n "$pid" ]; then
    say "dockerd (pid $pid) is running but not answering yet: waiting for it"
else
    say "starting dockerd --iptables=false (log: $LOG)"
    echo "=== $(date -Is) ensure-dockerd.sh starts dockerd --iptables=false" >>"$LOG"
    # setsid: its own session and process group, so killing the test's
    # process group does not take dockerd with it.
    setsid dockerd --iptables=false </dev/null >>"$LOG" 2>&1 &
    pid=$!
fi

deadline=$(( $(date +%s) + WAIT ))
until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        say "dockerd exited; last lines of $LOG:"
        tail -n 20 "$LOG" >&2 || true
        cannot "dockerd exited before answering on $SOCK"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "dockerd did not answer within $WAIT s; last lines of $LOG:"
        tail -n 20 "$LOG" >&2 || true
        cannot "dockerd did not answer on $SOCK within $WAIT s"
    fi
    sleep 0.1
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
driver=$(docker -H "unix://$SOCK" info --format '{{.Driver}}' 2>/dev/null || echo '?')
say "dockerd (pid $pid) answers on $SOCK after ${ms} ms (storage driver: $driver)"
