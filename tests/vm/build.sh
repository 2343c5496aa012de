#!/bin/bash
# Build the kernel + initramfs pair used by the real-kernel VM tests
# (tests/vm_kernel.rs). See ARCHITECTURE.md, Tests: the development and CI
# kernels have no dummy link type, so those tests boot Debian's own kernel
# under qemu TCG with a busybox initramfs.
#
# Usage:
#   tests/vm/build.sh --out DIR [--binary PATH] [--scenario PATH]
#
#   --out DIR        where to write initramfs.cpio (created; emptied first)
#   --binary PATH    static nodeprep executable, installed as
#                    /usr/local/bin/nodeprep in the guest (optional: the
#                    harness self-test runs without it)
#   --scenario PATH  shell script run by /init as /guest-scenario.sh
#                    (default: tests/vm/guest-scenario.sh)
#
# Environment:
#   NODEPREP_TEST_CACHE   cache directory (default /var/cache/nodeprep-tests);
#                         holds the downloaded kernel .deb and the extracted
#                         kernel + modules, reused on later runs.
#
# On success prints, on stdout, KEY=VALUE lines:
#   KERNEL=/path/vmlinuz  INITRD=/path/initramfs.cpio
#   KERNEL_PACKAGE=linux-image-...  KERNEL_VERSION=<debian version>
#   KERNEL_RELEASE=<uname -r of the guest>
#
# Exit status: 0 ok; 77 a prerequisite is missing (no busybox-static, no
# cpio, kernel package cannot be resolved or downloaded) -- the caller
# decides whether that is a skip (outside CI) or a failure (CI=true);
# anything else is a harness error.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NODEPREP_TEST_CACHE:-/var/cache/nodeprep-tests}
OUT=
BINARY=
SCENARIO=$HERE/guest-scenario.sh

# Modules copied into the guest, with their dependencies resolved from the
# .modinfo "depends=" field. dummy: the link type under test; bridge: the
# "dummy0 of another kind" case; veth is not needed (busybox ip can create
# dummy links itself once dummy.ko is loaded).
WANT_MODULES="dummy bridge"

log() { echo "build.sh: $*" >&2; }
prereq_missing() { echo "PREREQ-MISSING: $*" >&2; exit 77; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --binary) BINARY=$2; shift 2 ;;
        --scenario) SCENARIO=$2; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[ -n "$OUT" ] || die "--out DIR is required"
[ -f "$SCENARIO" ] || die "scenario script not found: $SCENARIO"
[ -z "$BINARY" ] || [ -x "$BINARY" ] || die "nodeprep binary not executable: $BINARY"

# ---------------------------------------------------------------- tools ----
for tool in cpio dpkg-deb flock; do
    command -v "$tool" >/dev/null 2>&1 || prereq_missing "'$tool' not found on the host"
done
# The guest has no libc: it needs the statically linked busybox from the
# busybox-static package (the dynamically linked "busybox" package would not
# run in the initramfs).
BUSYBOX=
for cand in /bin/busybox /usr/bin/busybox; do
    # A dynamic executable names its loader (PT_INTERP) in its first page.
    if [ -x "$cand" ] && ! head -c 4096 "$cand" | LC_ALL=C grep -qa 'ld-linux'; then
        BUSYBOX=$cand
        break
    fi
done
[ -n "$BUSYBOX" ] || prereq_missing "no static busybox (apt-get install busybox-static)"

mkdir -p "$CACHE" || prereq_missing "cannot create cache directory $CACHE"

# ----------------------------------------------------------- the kernel ----
# Everything touching the cache happens under a lock: the tests of one
# cargo run boot several VMs in parallel and must not download twice or see
# a half-extracted kernel.
exec 9>"$CACHE/.lock"
flock 9

# linux-image-amd64 is a metapackage; the kernel lives in the versioned
# package it depends on (e.g. linux-image-6.1.0-56-amd64). Sets PKG and VER.
resolve_kernel() {
    PKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }' || true)
    VER=
    if [ -n "$PKG" ]; then
        VER=$(apt-cache show --no-all-versions "$PKG" 2>/dev/null | awk '/^Version:/ { print $2; exit }' || true)
    fi
    KDIR=
    if [ -n "$PKG" ] && [ -n "$VER" ]; then
        KDIR=$CACHE/kernel/${PKG}_${VER}
    fi
}

apt_updated=
# A fresh machine may have no package lists, and old ones may name a kernel
# version the security archive no longer carries: refresh them once.
apt_update_once() {
    [ -z "$apt_updated" ] || return 1
    [ "$(id -u)" = 0 ] && [ -z "${NODEPREP_TEST_NO_APT_UPDATE:-}" ] || return 1
    apt_updated=1
    log "running apt-get update"
    apt-get update -qq >&2 || true
}

# Sets DEB to the cached or freshly downloaded .deb of $PKG $VER.
fetch_deb() {
    local part
    DEBDIR=$CACHE/debs
    mkdir -p "$DEBDIR"
    DEB=$(ls "$DEBDIR/${PKG}_${VER//:/%3a}_"*.deb 2>/dev/null | head -n 1 || true)
    [ -z "$DEB" ] || return 0
    log "downloading $PKG $VER (about 70 MB, once; cached in $DEBDIR)"
    part=$(mktemp -d "$DEBDIR/.partial.XXXXXX")
    # apt-get download verifies the package hash against the signed package
    # lists. The _apt sandbox user may not be able to write to the cache
    # directory, so download as root (saves a warning).
    if ! (cd "$part" && apt-get download -q -o APT::Sandbox::User=root "$PKG=$VER" >&2); then
        rm -rf "$part"
        return 1
    fi
    # (Runs in a condition, where set -e is off: check each step.)
    mv "$part"/*.deb "$DEBDIR"/ || return 1
    rm -rf "$part"
    DEB=$(ls "$DEBDIR/${PKG}_${VER//:/%3a}_"*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$DEB" ]
}

# Last resort (offline, or the archive dropped the version): the newest
# kernel already extracted in the cache -- any Debian kernel with dummy.ko
# serves these tests.
use_cached_kernel() {
    local base
    KDIR=$(ls -d "$CACHE"/kernel/linux-image-*/ 2>/dev/null | sort -V | tail -n 1 || true)
    KDIR=${KDIR%/}
    [ -n "$KDIR" ] && [ -f "$KDIR/.complete" ] || prereq_missing "$1, and no kernel cached in $CACHE/kernel"
    base=$(basename "$KDIR")
    PKG=${base%%_*}
    VER=${base#*_}
    log "warning: $1; using the cached kernel $PKG $VER"
}

DEB=
resolve_kernel
if [ -z "$KDIR" ] && apt_update_once; then
    resolve_kernel
fi
if [ -z "$KDIR" ]; then
    use_cached_kernel "cannot resolve the kernel package behind linux-image-amd64 (apt-cache)"
elif [ ! -f "$KDIR/.complete" ] && ! fetch_deb; then
    DEB=
    if apt_update_once; then
        resolve_kernel
        if [ -n "$KDIR" ] && [ ! -f "$KDIR/.complete" ]; then
            fetch_deb || DEB=
        fi
    fi
    if [ -z "$KDIR" ] || { [ ! -f "$KDIR/.complete" ] && [ -z "$DEB" ]; }; then
        use_cached_kernel "apt-get download ${PKG:-linux-image-amd64}${VER:+=$VER} failed"
    fi
fi

if [ ! -f "$KDIR/.complete" ]; then
    log "extracting $(basename "$DEB")"
    X=$(mktemp -d "$CACHE/.extract.XXXXXX")
    trap 'rm -rf "$X"' EXIT
    dpkg-deb -x "$DEB" "$X/root"

    rm -rf "$KDIR"
    mkdir -p "$KDIR/modules"
    vmlinuz=$(ls "$X"/root/boot/vmlinuz-* | head -n 1)
    [ -f "$vmlinuz" ] || die "no boot/vmlinuz-* in $DEB"
    cp "$vmlinuz" "$KDIR/vmlinuz"
    krel=${vmlinuz##*/vmlinuz-}
    echo "$krel" >"$KDIR/release"
    moddir=$X/root/lib/modules/$krel
    [ -d "$moddir" ] || moddir=$X/root/usr/lib/modules/$krel
    [ -d "$moddir" ] || die "no lib/modules/$krel in $DEB"

    # Find a module file by name (file names use '-' or '_' interchangeably
    # with the module name), decompress it if needed (busybox insmod takes a
    # plain ELF object), record its dependencies and recurse into them.
    # Modules listed in modules.builtin are part of the kernel image.
    copy_module() {
        local name=$1 f out deps dep
        [ -f "$KDIR/modules/$name.ko" ] && return 0
        if grep -Eq "/${name//_/[-_]}\.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
            log "module $name is built in"
            : >"$KDIR/modules/$name.builtin"
            return 0
        fi
        f=$(find "$moddir/kernel" -regextype posix-extended \
                -regex ".*/${name//_/[-_]}\.ko(\.xz|\.zst|\.gz)?" | head -n 1)
        [ -n "$f" ] || die "module $name not found in $DEB"
        out=$KDIR/modules/$name.ko
        case $f in
            *.ko.xz) xz -dc "$f" >"$out" ;;
            *.ko.zst) zstd -qdc "$f" >"$out" ;;
            *.ko.gz) gzip -dc "$f" >"$out" ;;
            *) cp "$f" "$out" ;;
        esac
        deps=$(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' ')
        echo "$deps" >"$KDIR/modules/$name.deps"
        for dep in $deps; do copy_module "$dep"; done
    }
    for m in $WANT_MODULES; do copy_module "$m"; done

    echo "$PKG $VER" >"$KDIR/package"
    touch "$KDIR/.complete"
    rm -rf "$X"
    trap - EXIT
fi
KREL=$(cat "$KDIR/release")

# Take private copies of what the initramfs needs, then release the lock.
# Only our own outputs are removed from --out, never the directory itself.
mkdir -p "$OUT"
rm -rf "$OUT/root" "$OUT/vmlinuz" "$OUT/initramfs.cpio"
cp "$KDIR/vmlinuz" "$OUT/vmlinuz"
STAGE=$OUT/root
mkdir -p "$STAGE/lib/modules/nodeprep"
cp "$KDIR"/modules/* "$STAGE/lib/modules/nodeprep/"
flock -u 9

# ------------------------------------------------------------ initramfs ----
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,run,tmp,etc,root,var/lib}
cp "$BUSYBOX" "$STAGE/bin/busybox"
# Applet symlinks made here rather than with `busybox --install -s` at boot:
# /init is a #!/bin/sh script, so /bin/sh must exist before anything runs.
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] && continue
    [ -e "$STAGE/bin/$applet" ] || ln -s busybox "$STAGE/bin/$applet"
done
# The kernel opens /dev/console for init before any devtmpfs is mounted;
# without the node init starts with no stdio (it re-opens the console after
# mounting devtmpfs anyway, so failing here is harmless when not root).
mknod -m 600 "$STAGE/dev/console" c 5 1 2>/dev/null || true

cat >"$STAGE/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$STAGE/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo nodeprep-vm >"$STAGE/etc/hostname"
printf '127.0.0.1\tlocalhost\n' >"$STAGE/etc/hosts"

install -m 0755 "$HERE/guest-init.sh" "$STAGE/init"
install -m 0755 "$SCENARIO" "$STAGE/guest-scenario.sh"
install -D -m 0644 "$HERE/guest-lib.sh" "$STAGE/lib/nodeprep-test/lib.sh"
if [ -n "$BINARY" ]; then
    install -m 0755 "$BINARY" "$STAGE/usr/local/bin/nodeprep"
fi

# Uncompressed newc archive: the kernel unpacks it directly, which is faster
# under TCG than decompressing a gzip'd one inside the emulated guest.
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$OUT/initramfs.cpio"
rm -rf "$STAGE"

echo "KERNEL=$OUT/vmlinuz"
echo "INITRD=$OUT/initramfs.cpio"
echo "KERNEL_PACKAGE=$PKG"
echo "KERNEL_VERSION=$VER"
echo "KERNEL_RELEASE=$KREL"
