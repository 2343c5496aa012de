#!/usr/bin/env bash
# Builds the TEST STAND-INS (standins/: consul-standin, registrator-standin
# and workload-standin; NOT Consul, NOT registrator) and imports them as local
# images:
#
#   nodeprep-test/consul-standin:1       /bin/consul-standin, runs as 100:1000
#   nodeprep-test/consul-standin:2       same binary, another marker file, so
#                                        another image ID ("image changed" tests)
#   nodeprep-test/registrator-standin:1  /bin/registrator-standin
#   nodeprep-test/workload-standin:1     /bin/workload-standin: an idle
#                                        container whose ports registrator
#                                        registers in tests
#
# Each image is a `docker import` of a tarball (no registry, no base image)
# with the real image's ENTRYPOINT/CMD shape. The consul images run as uid
# 100, gid 1000 (`USER 100:1000`), the real image's `consul` user and group,
# and own /consul/config and /consul/data as the real image does (chown
# consul:consul); /etc/passwd and /etc/group name them. An image is reused when its
# label org.nodeprep.standin.hash matches the binary and the recipe; set
# NODEPREP_STANDINS_FORCE=1 to re-import anyway.
#
# Needs a Docker engine on /var/run/docker.sock (run ensure-dockerd.sh first),
# cargo, and root (the consul images' files belong to uid 100). Exit 0 when
# the four images are there, 1 on any failure.
#
# NODEPREP_STANDINS_BUILD_ONLY=1: build (and check) the static binaries only,
# no engine needed, and print their directory on stdout; for tests that run
# the stand-ins as plain processes (e.g. in a network namespace).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PKG="$REPO/standins"
TRIPLE=x86_64-unknown-linux-gnu
LOCK=${NODEPREP_TEST_STANDINS_LOCK:-/tmp/nodeprep-test-standins.lock}
# Bump when the image layout or the --change list below changes.
RECIPE=4
DOCKER=(docker -H unix:///var/run/docker.sock)

say() { echo "build-standins: $*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

exec 9>"$LOCK"
flock -w 900 9 || { say "timed out waiting for $LOCK"; exit 1; }

# Build with standins/'s own .cargo/config.toml (found from the working
# directory) and its own target dir, whatever the caller's cargo environment
# says: RUSTFLAGS from the environment would replace the +crt-static flag.
t0=$(now_ms)
(
    cd "$PKG"
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS
    export CARGO_TARGET_DIR="$PKG/target"
    cargo build --release --locked --quiet --target "$TRIPLE" \
        --bin consul-standin --bin registrator-standin --bin workload-standin
)
BIN_DIR="$PKG/target/$TRIPLE/release"
for b in consul-standin registrator-standin workload-standin; do
    if ! ldd "$BIN_DIR/$b" 2>&1 | grep -q 'statically linked\|not a dynamic executable'; then
        say "$BIN_DIR/$b is not statically linked: it cannot run alone in an image"
        ldd "$BIN_DIR/$b" >&2 || true
        exit 1
    fi
done
say "cargo build (release, static) took $(( $(now_ms) - t0 )) ms"
if [ "${NODEPREP_STANDINS_BUILD_ONLY:-0}" = 1 ]; then
    echo "$BIN_DIR"
    exit 0
fi

WORK=$(mktemp -d /tmp/nodeprep-standins.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# import REF BIN VARIANT CHANGE...: builds the rootfs tarball and imports it
# unless REF already carries the same hash.
import() {
    local ref=$1 bin=$2 variant=$3
    shift 3
    local hash have
    hash=$( { sha256sum "$BIN_DIR/$bin" | cut -d' ' -f1; echo "recipe=$RECIPE variant=$variant"; printf '%s\n' "$@"; } \
        | sha256sum | cut -c1-16)
    have=$("${DOCKER[@]}" image inspect -f '{{index .Config.Labels "org.nodeprep.standin.hash"}}' "$ref" 2>/dev/null || true)
    if [ "$have" = "$hash" ] && [ "${NODEPREP_STANDINS_FORCE:-0}" != 1 ]; then
        say "$ref is up to date (hash $hash), reused"
        return
    fi
    local t root
    t=$(now_ms)
    root="$WORK/$bin-$variant"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp"
    chmod 1777 "$root/tmp"
    cp "$BIN_DIR/$bin" "$root/bin/$bin"
    if [ "$bin" = consul-standin ]; then
        mkdir -p "$root/consul/config" "$root/consul/data"
        chown -R 100:1000 "$root/consul"
        printf 'root:x:0:0:root:/root:/bin/sh\nconsul:x:100:1000:consul:/home/consul:/sbin/nologin\n' >"$root/etc/passwd"
        printf 'root:x:0:\nconsul:x:1000:consul\n' >"$root/etc/group"
    fi
    printf '%s image variant %s (a test stand-in, NOT the real program); hash %s\n' \
        "$bin" "$variant" "$hash" >"$root/etc/nodeprep-standin"
    # Owners as on disk (root here, 100:1000 for /consul): the builder is root.
    tar --sort=name --mtime=@0 --numeric-owner \
        -C "$root" -cf "$WORK/$bin-$variant.tar" .
    local args=()
    for c in "$@"; do args+=(--change "$c"); done
    args+=(--change "LABEL org.nodeprep.standin.hash=$hash")
    args+=(--change "LABEL org.nodeprep.standin=\"$bin: a test stand-in for nodeprep, NOT the real program\"")
    args+=(--change "LABEL org.nodeprep.standin.variant=$variant")
    local id
    id=$("${DOCKER[@]}" import "${args[@]}" "$WORK/$bin-$variant.tar" "$ref")
    say "imported $ref as ${id#sha256:} in $(( $(now_ms) - t )) ms"
}

# The real hashicorp/consul image: entrypoint script, default CMD a dev server,
# VOLUME /consul/data, these ports. Its entrypoint drops to the consul user
# (100:1000) before it runs the agent; the stand-in image starts as that user.
CONSUL_CHANGES=(
    'ENTRYPOINT ["/bin/consul-standin"]'
    'CMD ["agent", "-dev", "-client", "0.0.0.0"]'
    'VOLUME ["/consul/data"]'
    'EXPOSE 8300 8301 8301/udp 8302 8302/udp 8500 8600 8600/udp'
    'USER 100:1000'
)
import nodeprep-test/consul-standin:1 consul-standin 1 "${CONSUL_CHANGES[@]}"
import nodeprep-test/consul-standin:2 consul-standin 2 "${CONSUL_CHANGES[@]}"
# gliderlabs/registrator: ENTRYPOINT only, the options and URI are the command.
import nodeprep-test/registrator-standin:1 registrator-standin 1 'ENTRYPOINT ["/bin/registrator-standin"]'
# No EXPOSE: a test publishes exactly the ports it wants registered.
import nodeprep-test/workload-standin:1 workload-standin 1 'ENTRYPOINT ["/bin/workload-standin"]'

id1=$("${DOCKER[@]}" image inspect -f '{{.Id}}' nodeprep-test/consul-standin:1)
id2=$("${DOCKER[@]}" image inspect -f '{{.Id}}' nodeprep-test/consul-standin:2)
if [ "$id1" = "$id2" ]; then
    say "consul-standin:1 and :2 have the same image ID $id1: the 'image changed' tests need two"
    exit 1
fi
say "ready in $(( $(now_ms) - t0 )) ms"
