#!/usr/bin/env bash
# Builds the nodeprep Debian package with cargo-deb.
#
#   packaging/build-deb.sh                 # release build -> target/debian/nodeprep_<version>_amd64.deb
#
# Options (the tests use them; an operator needs none):
#   --binary PATH       package this nodeprep executable instead of building
#                       the release binary
#   --deb-version V     the package version (default: Cargo's version, -1)
#   --out DIR           where the .deb goes (default: target/debian)
#   --fast              lighter compression (tests)
#
# Steps: build the release binary (static, .cargo/config.toml); generate
# from that binary the man page (`nodeprep man`), the bash, zsh and fish
# completions (`nodeprep completions SHELL`), the commented default
# configuration (`nodeprep config default`, the conffile
# /etc/nodeprep/nodeprep.toml) and the Debian changelog into
# target/debian-assets/; then `cargo deb --no-build` with the metadata of
# Cargo.toml ([package.metadata.deb]). cargo-deb is installed first when
# missing, at the pinned version below.
#
# Prints the package's path on the last line of stdout: DEB=<path>.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
TARGET=x86_64-unknown-linux-gnu

REPO=$(cd "$(dirname "$0")/.." && pwd)

BINARY=
DEB_VERSION=
OUT=$REPO/target/debian
FAST=()
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BINARY=$2; shift 2 ;;
        --deb-version) DEB_VERSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --fast) FAST=(--fast); shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument: $1" >&2; exit 64 ;;
    esac
done

log() { echo "build-deb.sh: $*" >&2; }

# Paths given relative to where the script was called from.
[ -z "$BINARY" ] || BINARY=$(realpath "$BINARY")
OUT=$(realpath -m "$OUT")
cd "$REPO"

# ------------------------------------------------------------ cargo-deb ----
have=$(cargo deb --version 2>/dev/null || true)
if [ "${have##* }" != "$CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (found: ${have:-none})"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2
fi

# Two builds at once (a test and a person) must not mix their assets.
mkdir -p target
exec 9>target/.build-deb.lock
flock 9

# --------------------------------------------------------------- binary ----
if [ -z "$BINARY" ]; then
    cargo build --release --locked --target "$TARGET" >&2
    BINARY=target/$TARGET/release/nodeprep
fi
[ -x "$BINARY" ] || { echo "build-deb.sh: not an executable: $BINARY" >&2; exit 64; }
# cargo-deb takes the binary from <target dir>/<triple>/release/: a staging
# target dir holds a stripped copy (symbols and the .comment section, which
# Cargo's strip keeps), of the release build or of --binary.
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/nodeprep-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/$TARGET/release"
strip --strip-all --remove-section=.comment -o "$STAGE/$TARGET/release/nodeprep" "$BINARY"
BINARY=$STAGE/$TARGET/release/nodeprep

# ------------------------------------------------------- generated assets ----
ASSETS=target/debian-assets
rm -rf "$ASSETS"
mkdir -p "$ASSETS/completions"
"$BINARY" man >"$ASSETS/nodeprep.8"
"$BINARY" completions bash >"$ASSETS/completions/nodeprep"
"$BINARY" completions zsh >"$ASSETS/completions/_nodeprep"
"$BINARY" completions fish >"$ASSETS/completions/nodeprep.fish"
"$BINARY" config default >"$ASSETS/nodeprep.toml"
"$BINARY" config validate "$ASSETS/nodeprep.toml" >&2

UPSTREAM=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "nodeprep"))')
VERSION=${DEB_VERSION:-$UPSTREAM-1}
MAINTAINER=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# The changelog's date: the commit's (reproducible), or SOURCE_DATE_EPOCH.
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
cat >"$ASSETS/changelog" <<CHANGELOG
nodeprep ($VERSION) unstable; urgency=medium

  * nodeprep $UPSTREAM, packaged from its repository with
    packaging/build-deb.sh (cargo-deb $CARGO_DEB_VERSION).

 -- $MAINTAINER  $(LC_ALL=C date -u -R -d "@$EPOCH")
CHANGELOG

# ----------------------------------------------------------------- package ----
mkdir -p "$OUT"
args=(deb --no-build --target "$TARGET" --deb-version "$VERSION" --output "$OUT" "${FAST[@]}")
log "cargo ${args[*]} (binary $BINARY)"
deb=$(SOURCE_DATE_EPOCH=$EPOCH CARGO_TARGET_DIR=$STAGE cargo "${args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb did not print the package path (got: $deb)" >&2; exit 1; }
log "built $deb"
echo "DEB=$deb"
