#!/bin/bash
# Export the container images the Debian VM tier (tests/debian_vm.rs) loads
# into the guest's dockerd: the VM has no network card and there is no
# registry anyway, so every image comes from the host's dockerd as a
# `docker save` tarball copied into the disk image.
#
#   nodeprep-test/consul-standin:1       TEST STAND-IN for hashicorp/consul
#   nodeprep-test/registrator-standin:1  TEST STAND-IN for registrator
#                                        (both built by tests/docker/build-standins.sh:
#                                        NOT Consul, NOT registrator)
#   nodeprep-test/busybox:1              the host's static busybox (package
#                                        busybox-static), for `nslookup` in a
#                                        container run with --dns 169.254.1.1
#
# Usage:
#   tests/debian-vm/make-images.sh --out DIR
#
# On success prints KEY=VALUE lines on stdout:
#   IMAGES_TAR=<DIR/images.tar>  IMAGES=<ref,ref,..>  IMAGES_SECONDS=<seconds>
#   CONSUL_IMAGE=<ref>  REGISTRATOR_IMAGE=<ref>  BUSYBOX_IMAGE=<ref>
# Exit status: 0 ok; 77 a prerequisite is missing (no Docker engine can be
# had, no static busybox), with a "PREREQ-MISSING: <why>" line on stderr;
# anything else is a harness error.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=
CONSUL_IMAGE=nodeprep-test/consul-standin:1
REGISTRATOR_IMAGE=nodeprep-test/registrator-standin:1
BUSYBOX_IMAGE=nodeprep-test/busybox:1
# An idle container to publish a port from (the "web" service the
# registrator stand-in registers in the service discovery story).
WORKLOAD_IMAGE=nodeprep-test/workload-standin:1
# Bump when the busybox image's layout or --change list changes.
BUSYBOX_RECIPE=1
DOCKER=(docker -H unix:///var/run/docker.sock)

log() { echo "make-images.sh: $*" >&2; }
prereq_missing() { echo "PREREQ-MISSING: $*" >&2; exit 77; }
die() { echo "make-images.sh: error: $*" >&2; exit 1; }

STARTED=$(date +%s.%N)
elapsed() { awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[ -n "$OUT" ] || die "--out DIR is required"
mkdir -p "$OUT"

# ------------------------------------------------------------- dockerd ----
rc=0
bash "$REPO/tests/docker/ensure-dockerd.sh" || rc=$?
case $rc in
    0) ;;
    77) prereq_missing "no Docker engine on the host to build and export the stand-in images (tests/docker/ensure-dockerd.sh)" ;;
    *) die "tests/docker/ensure-dockerd.sh failed (exit $rc)" ;;
esac

# ------------------------------------------------------------ stand-ins ----
bash "$REPO/tests/docker/build-standins.sh" || die "tests/docker/build-standins.sh failed"

# -------------------------------------------------------------- busybox ----
BUSYBOX=
for b in /bin/busybox /usr/bin/busybox; do
    [ -x "$b" ] && BUSYBOX=$b && break
done
[ -n "$BUSYBOX" ] || prereq_missing "no busybox on the host (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    prereq_missing "$BUSYBOX is dynamically linked: the image needs the static one (apt-get install busybox-static)"
fi
"$BUSYBOX" --list | grep -qx nslookup || prereq_missing "$BUSYBOX has no nslookup applet"

hash=$( { sha256sum "$BUSYBOX" | cut -d' ' -f1; echo "recipe=$BUSYBOX_RECIPE"; } | sha256sum | cut -c1-16)
have=$("${DOCKER[@]}" image inspect -f '{{index .Config.Labels "org.nodeprep.test.hash"}}' "$BUSYBOX_IMAGE" 2>/dev/null || true)
if [ "$have" = "$hash" ]; then
    log "$BUSYBOX_IMAGE is up to date (hash $hash), reused"
else
    WORK=$(mktemp -d /tmp/nodeprep-busybox.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/root/bin" "$WORK/root/etc" "$WORK/root/tmp"
    chmod 1777 "$WORK/root/tmp"
    cp "$BUSYBOX" "$WORK/root/bin/busybox"
    # Every applet as a symlink, as the busybox image has them.
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$WORK/root/bin/$applet"
    done
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C "$WORK/root" -cf "$WORK/busybox.tar" .
    id=$("${DOCKER[@]}" import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["sh"]' \
        --change "LABEL org.nodeprep.test.hash=$hash" \
        --change "LABEL org.nodeprep.test=\"the host's static busybox, for DNS lookups from a container in tests\"" \
        "$WORK/busybox.tar" "$BUSYBOX_IMAGE")
    log "imported $BUSYBOX_IMAGE as ${id#sha256:} from $BUSYBOX ($("$BUSYBOX" 2>&1 | head -n 1))"
fi

# --------------------------------------------------------------- export ----
rm -f "$OUT/images.tar"
"${DOCKER[@]}" save -o "$OUT/images.tar.partial" "$CONSUL_IMAGE" "$REGISTRATOR_IMAGE" "$BUSYBOX_IMAGE" "$WORKLOAD_IMAGE" ||
    die "docker save failed"
mv "$OUT/images.tar.partial" "$OUT/images.tar"
secs=$(elapsed)
log "saved $CONSUL_IMAGE, $REGISTRATOR_IMAGE, $BUSYBOX_IMAGE, $WORKLOAD_IMAGE to $OUT/images.tar ($(du -h "$OUT/images.tar" | cut -f1)) in ${secs}s"
echo "IMAGES_TAR=$OUT/images.tar"
echo "IMAGES=$CONSUL_IMAGE,$REGISTRATOR_IMAGE,$BUSYBOX_IMAGE,$WORKLOAD_IMAGE"
echo "CONSUL_IMAGE=$CONSUL_IMAGE"
echo "REGISTRATOR_IMAGE=$REGISTRATOR_IMAGE"
echo "BUSYBOX_IMAGE=$BUSYBOX_IMAGE"
echo "IMAGES_SECONDS=$secs"
# The consul stand-in binary itself: the VM runs one as a plain process in
# the role of the cluster's servers (make-disk.sh).
echo "CONSUL_STANDIN_BIN=$REPO/standins/target/x86_64-unknown-linux-gnu/release/consul-standin"
