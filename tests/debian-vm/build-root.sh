#!/bin/bash
# Build (or reuse) a Debian root filesystem of the full-host VM tier
# (tests/debian_vm.rs): systemd, systemd-resolved, Debian's dnsmasq,
# docker.io, podman, NetworkManager, cloud-init and Debian's own kernel, made
# with mmdebstrap and cached as a tarball. One root per suite serves every
# host variant of that suite: make-disk.sh removes, masks or configures what
# a variant must not have.
#
# Usage:
#   tests/debian-vm/build-root.sh [--suite bookworm|trixie]
#
# Environment:
#   NODEPREP_TEST_CACHE     cache directory (default /var/cache/nodeprep-tests);
#                           the root is kept as debian-vm/root-<suite>-<key>.tar,
#                           where <key> hashes this script, tests/debian-vm/packages,
#                           the suite and the mirrors, so editing either rebuilds it.
#   NODEPREP_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   NODEPREP_DEBIAN_SECURITY_MIRROR
#                           (default http://deb.debian.org/debian-security)
#
# On success prints KEY=VALUE lines on stdout:
#   ROOT_TAR=<path>  ROOT_CACHE=hit|built  ROOT_SECONDS=<seconds spent here>
#   ROOT_KEY=<key>
#
# Exit status: 0 ok; 77 a prerequisite is missing (not root, mmdebstrap not
# installable, Debian mirror unreachable), with a "PREREQ-MISSING: <why>" line
# on stderr -- the caller decides whether that is a skip (outside CI) or a
# failure (CI=true); anything else is a harness error.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NODEPREP_TEST_CACHE:-/var/cache/nodeprep-tests}/debian-vm
MIRROR=${NODEPREP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${NODEPREP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
while [ $# -gt 0 ]; do
    case $1 in
        --suite) SUITE=$2; shift 2 ;;
        *) echo "build-root.sh: unknown argument: $1" >&2; exit 1 ;;
    esac
done
case $SUITE in bookworm | trixie) ;; *) echo "build-root.sh: unsupported suite: $SUITE" >&2; exit 1 ;; esac
PACKAGES_FILE=$HERE/packages

log() { echo "build-root.sh: $*" >&2; }
prereq_missing() { echo "PREREQ-MISSING: $*" >&2; exit 77; }
die() { echo "build-root.sh: error: $*" >&2; exit 1; }

STARTED=$(date +%s.%N)
elapsed() { awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || prereq_missing "build-root.sh must run as root (mmdebstrap root mode, chroot)"
[ -f "$PACKAGES_FILE" ] || die "package list not found: $PACKAGES_FILE"

# One package per line; '#' comments and blank lines ignored; a package
# followed by `[suite]` is installed on that suite only.
PACKAGES=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PACKAGES_FILE" |
    awk -v suite="$SUITE" '{ if (NF == 1 || $2 == "[" suite "]") print $1 }' | paste -sd, -)
[ -n "$PACKAGES" ] || die "empty package list in $PACKAGES_FILE"

KEY=$( { cat "$0" "$PACKAGES_FILE"; echo "$SUITE $MIRROR $SECURITY"; } | sha256sum | cut -c1-16)
TAR=$CACHE/root-$SUITE-$KEY.tar

mkdir -p "$CACHE" || prereq_missing "cannot create cache directory $CACHE"
# Two cargo runs (or a run and a by-hand call) must not build the same root
# twice or read a half-written tarball.
exec 9>"$CACHE/.lock"
flock 9

if [ -f "$TAR" ]; then
    log "cache hit: $TAR"
    echo "ROOT_TAR=$TAR"
    echo "ROOT_CACHE=hit"
    echo "ROOT_SECONDS=$(elapsed)"
    echo "ROOT_KEY=$KEY"
    exit 0
fi

# ------------------------------------------------------------ mmdebstrap ----
if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "mmdebstrap not installed; installing it with apt-get"
    # A fresh machine may have no package lists yet.
    if ! { apt-get install -y -qq mmdebstrap >&2 ||
           { apt-get update -qq >&2 && apt-get install -y -qq mmdebstrap >&2; }; }; then
        prereq_missing "mmdebstrap is not installed and apt-get install mmdebstrap failed (no package registry?)"
    fi
fi
# The eatmydata hook ships with mmdebstrap (mmdebstrap >= 0.8).
EATMYDATA_HOOKS=/usr/share/mmdebstrap/hooks/eatmydata
[ -d "$EATMYDATA_HOOKS" ] || die "mmdebstrap's eatmydata hook directory is missing: $EATMYDATA_HOOKS"

# Build in a tmpfs when there is one with room: on this machine's ext4 root
# (mounted with "discard") mmdebstrap's final `rm -rf` of its 1 GB temporary
# tree alone took 52 s, the whole build 160 s instead of about 100 s.
BUILD_TMP=
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1)" -gt $((4 * 1024 * 1024)) ] 2>/dev/null; then
    BUILD_TMP=/dev/shm
fi

HOOK=$(mktemp "${TMPDIR:-/tmp}/nodeprep-essential-hook.XXXXXX")
LOGFILE=$CACHE/build-$SUITE-$KEY.log
trap 'rm -f "$HOOK" "$TAR.partial.tar"' EXIT

# Runs after the Essential packages, before linux-image-amd64 is installed:
# the initramfs is built once, when the kernel is set up, so its settings must
# be there first. MODULES=list with the three modules a virtio ext4 root needs
# (instead of Debian's MODULES=most) keeps update-initramfs, which runs twice
# during the build, short and the initrd small; the rest of the kernel's
# modules (dummy.ko, bridge, netfilter, overlay) load from the root.
cat >"$HOOK" <<'EOF'
#!/bin/sh
set -e
mkdir -p "$1/etc/initramfs-tools/conf.d"
echo MODULES=list >"$1/etc/initramfs-tools/conf.d/nodeprep-vm.conf"
printf '%s\n' virtio_pci virtio_blk ext4 >>"$1/etc/initramfs-tools/modules"
EOF
chmod 755 "$HOOK"

# dpkg path filters. Paths are the package's own: bookworm kernel packages
# ship /lib/modules (not /usr/lib/modules), so the filters name /lib.
# Dropped: documentation, manuals, translations, and kernel modules for
# hardware a qemu guest without a NIC never has (GPUs, media, wireless, USB,
# SCSI, ...): together about a third of the root.
DPKG_OPTS=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
)
for dir in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet \
    drivers/infiniband drivers/staging drivers/iio drivers/usb drivers/scsi \
    drivers/comedi drivers/isdn drivers/bluetooth drivers/mtd drivers/hwmon \
    drivers/hid drivers/input drivers/target drivers/thunderbolt drivers/nfc \
    sound net/wireless net/mac80211 net/bluetooth; do
    DPKG_OPTS+=(--dpkgopt="path-exclude=/lib/modules/*/kernel/$dir/*")
done

log "building the $SUITE root ($PACKAGES) into $TAR (log: $LOGFILE)"
# minbase + eatmydata: measured on this 2-core machine, without eatmydata the
# same build took 287 s (dpkg fsyncs every file).
# Every log line is prefixed with the seconds since the start, to see where
# the time goes.
rc=0
TMPDIR=${BUILD_TMP:-${TMPDIR:-/tmp}} mmdebstrap \
    --variant=minbase \
    --include="$PACKAGES" \
    --hook-directory="$EATMYDATA_HOOKS" \
    --essential-hook="$HOOK \"\$1\"" \
    "${DPKG_OPTS[@]}" \
    "$SUITE" "$TAR.partial.tar" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY $SUITE-security main" \
    2>&1 | while IFS= read -r line; do printf '%4ss %s\n' "$SECONDS" "$line"; done >"$LOGFILE" ||
    rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    rm -f "$TAR.partial.tar"
    tail -n 40 "$LOGFILE" >&2
    if grep -qE 'Failed to fetch|Could not resolve|Temporary failure resolving|Unable to connect|Could not connect|Connection failed|Network is unreachable' "$LOGFILE"; then
        prereq_missing "the Debian mirror $MIRROR is unreachable (mmdebstrap could not download; see $LOGFILE)"
    fi
    die "mmdebstrap failed (exit $rc); see $LOGFILE"
fi
mv "$TAR.partial.tar" "$TAR"

# Older roots of this suite (other keys) are dead weight of about 1 GB
# each. Roots of other suites, and of other checkouts' naming, are left to
# whoever uses them.
for old in "$CACHE"/root-"$SUITE"-*.tar; do
    [ -e "$old" ] || continue
    [ "$old" = "$TAR" ] && continue
    oldkey=${old##*/root-}
    rm -f "$old" "$CACHE/build-${oldkey%.tar}.log"
done

secs=$(elapsed)
log "built $TAR ($(du -h "$TAR" | cut -f1)) in ${secs}s"
echo "ROOT_TAR=$TAR"
echo "ROOT_CACHE=built"
echo "ROOT_SECONDS=$secs"
echo "ROOT_KEY=$KEY"
