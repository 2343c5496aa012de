#!/usr/bin/env bash
# Loads the TEST STAND-IN images (tests/docker/build-standins.sh builds them
# into Docker; NOT Consul, NOT registrator) into rootful Podman: `docker save`
# of the four images, `podman load` of the tarball. Podman names them
# localhost/nodeprep-test/...; the short names nodeprep-test/... find them
# through its Docker-compatible API. Reuses what Podman has when every
# image ID matches Docker's.
#
# Needs Docker with the stand-ins (run ensure-dockerd.sh and
# build-standins.sh first) and podman. Exit 0 when Podman has the images.
set -euo pipefail

IMAGES=(nodeprep-test/consul-standin:1 nodeprep-test/consul-standin:2
    nodeprep-test/registrator-standin:1 nodeprep-test/workload-standin:1)
LOCK=${NODEPREP_TEST_PODMAN_LOCK:-/tmp/nodeprep-test-podman.lock}.images
DOCKER=(docker -H unix:///var/run/docker.sock)

say() { echo "podman load-standins: $*" >&2; }

exec 9>"$LOCK"
flock -w 900 9 || { say "timed out waiting for $LOCK"; exit 1; }

t0=$(date +%s%N)
stale=0
for ref in "${IMAGES[@]}"; do
    want=$("${DOCKER[@]}" image inspect -f '{{.Id}}' "$ref")
    have=$(podman image inspect -f '{{.Id}}' "localhost/$ref" 2>/dev/null || true)
    [ "sha256:$have" = "$want" ] || [ "$have" = "$want" ] || stale=1
done
if [ "$stale" = 0 ]; then
    say "Podman has the stand-ins already"
    exit 0
fi
"${DOCKER[@]}" save "${IMAGES[@]}" | podman load -q >&2
say "loaded ${#IMAGES[@]} images in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
