#!/usr/bin/env bash
# A local image registry for nodeprep's pull tests: Debian's docker-registry
# (the Distribution registry) on 127.0.0.1:5998, plain HTTP, holding the
# consul TEST STAND-IN (NOT Consul) as 127.0.0.1:5998/nodeprep-test/consul-standin:1.
# No registry outside this machine is reachable; this one is.
#
#   ensure-registry.sh          registry up, stand-in pushed (from Docker)
#   ensure-registry.sh podman   also: Podman may pull from it over HTTP
#                               (/etc/containers/registries.conf.d/
#                               nodeprep-test.conf, insecure = true; the API
#                               service is restarted when that file is new,
#                               since it reads registries.conf once)
#
# Docker pulls from loopback registries over HTTP by default. Needs root,
# docker-registry, Docker with the stand-ins (build-standins.sh). Exit 77
# when the registry cannot be had, 1 on other failures.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ADDR=127.0.0.1:5998
DIR=${NODEPREP_TEST_REGISTRY_DIR:-/var/lib/nodeprep-test-registry}
LOG=${NODEPREP_TEST_REGISTRY_LOG:-/var/log/nodeprep-test-registry.log}
LOCK=/tmp/nodeprep-test-registry.lock
IMAGE=nodeprep-test/consul-standin:1
DOCKER=(docker -H unix:///var/run/docker.sock)

say() { echo "ensure-registry: $*" >&2; }
cannot() { say "CANNOT HAVE A REGISTRY: $*"; exit 77; }

exec 9>"$LOCK"
flock -w 600 9 || cannot "timed out waiting for $LOCK"

answers() { curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$ADDR/v2/" | grep -q 200; }

if ! answers; then
    [ "$(id -u)" = 0 ] || cannot "not root"
    command -v docker-registry >/dev/null 2>&1 || cannot "docker-registry is missing (apt-get install docker-registry)"
    mkdir -p "$DIR"
    cat >"$DIR/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDR
CONF
    say "starting docker-registry on $ADDR (log: $LOG)"
    setsid docker-registry serve "$DIR/config.yml" </dev/null >>"$LOG" 2>&1 9>&- &
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    answers || cannot "docker-registry did not answer on $ADDR"
fi

if ! curl -sf -o /dev/null "http://$ADDR/v2/$(dirname "$IMAGE")/$(basename "${IMAGE%%:*}")/manifests/${IMAGE##*:}" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json'; then
    "${DOCKER[@]}" tag "$IMAGE" "$ADDR/$IMAGE"
    "${DOCKER[@]}" push "$ADDR/$IMAGE" >&2
    "${DOCKER[@]}" rmi "$ADDR/$IMAGE" >/dev/null
    say "pushed $ADDR/$IMAGE"
fi

if [ "${1:-}" = podman ]; then
    conf=/etc/containers/registries.conf.d/nodeprep-test.conf
    want=$(printf '# nodeprep tests: the local test registry speaks plain HTTP.\n[[registry]]\nlocation = "%s"\ninsecure = true' "$ADDR")
    if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
        mkdir -p "$(dirname "$conf")"
        printf '%s\n' "$want" >"$conf"
        say "wrote $conf; restarting the Podman API service so that it reads it"
        bash "$HERE/../podman/ensure-podman.sh" --restart
    fi
fi
