#!/bin/bash
# Make a fresh ext4 disk image for one run of the Debian VM tier
# (tests/debian_vm.rs) from the cached root of build-root.sh, with the
# nodeprep binary, the stand-in images, the user data and the test scenario
# added, and extract the root's kernel and initrd to boot it with qemu
# -kernel/-initrd.
#
# Usage:
#   tests/debian-vm/make-disk.sh --variant NAME --root-tar TAR --binary PATH
#                                --images TAR --user-data FILE --deb FILE
#                                --upgrade-deb FILE
#                                --server-standin PATH --out DIR
#
#   --variant NAME   the host variant (see "Variants" below)
#   --root-tar TAR   the root tarball printed by build-root.sh (ROOT_TAR=)
#   --binary PATH    static nodeprep executable -> /var/lib/nodeprep-test/nodeprep
#                    (the one the packages hold, for reference)
#   --deb FILE       the nodeprep package -> /var/lib/nodeprep-test/nodeprep.deb
#                    (the user data's runcmd copies it where
#                    configs/cloud-init.yaml downloads it, then apt-get installs it)
#   --upgrade-deb FILE  the same package with a higher version ->
#                    /var/lib/nodeprep-test/nodeprep-upgrade.deb (package-steps.sh)
#   --images TAR     `docker save` tarball of make-images.sh ->
#                    /var/lib/nodeprep-test/images.tar (loaded by runcmd)
#   --user-data FILE user data made by make-user-data.py from
#                    configs/cloud-init.yaml -> the NoCloud seed
#   --out DIR        where disk.img, vmlinuz and initrd.img are written
#                    (replaced when present)
#
# Variants (one root per suite serves them all):
#   nm         NetworkManager active (it owns the network; networkd is
#              not enabled), systemd-resolved active (as the root has it),
#              the site's DNS server given to it the way an image would (a
#              resolved.conf drop-in); Debian's dnsmasq and Docker
#   plain      no systemd-resolved (purged): a plain /etc/resolv.conf naming
#              the site's DNS server; dnsmasq and Docker
#   resolved-podman  systemd-resolved active, dnsmasq's package purged (its
#              dnsmasq-base binary stays: NetworkManager depends on it),
#              docker.io purged: rootful Podman is the engine (the user
#              data enables podman.socket)
# In the other variants NetworkManager is masked. In every variant the site's DNS server is a
# small responder at 192.0.2.53 (nodeprep-test-upstream.service: it knows
# upstream.example.test and nothing else); on the Docker hosts
# /etc/docker/daemon.json holds a key of the image's own ("log-driver") that
# nodeprep must keep.
#
# Writes into the image (the files themselves are in tests/debian-vm/guest/):
#   /var/lib/nodeprep-test/{nodeprep,nodeprep.deb,nodeprep-upgrade.deb,images.tar}
#   /usr/local/lib/nodeprep-test/{scenario.sh,lib.sh,package-steps.sh}
#   /etc/dpkg/dpkg.cfg.d/nodeprep-test (the package's man page and docs are
#   installed despite the root's path-exclude of all others)
#   /etc/systemd/system/nodeprep-test.service     (enabled; runs the scenario)
#   /etc/systemd/system/nodeprep-uplink.service   (enabled; dummy uplink +
#                                                  default route, no NIC)
#   /etc/cloud/cloud.cfg.d/90-nodeprep-test.cfg, NoCloud seed directory
#   /etc/fstab, /etc/hostname, /etc/hosts, /etc/resolv.conf
# and no nodeprep package nor /etc/nodeprep/nodeprep.toml: cloud-init
# installs and writes them from the user data. apt's sources are removed
# (see below).
#
# On success prints KEY=VALUE lines on stdout:
#   DISK=<path> KERNEL=<path> INITRD=<path> KERNEL_RELEASE=<uname -r>
#   DISK_SECONDS=<seconds>
# Exit status: 0 ok; 77 a prerequisite is missing ("PREREQ-MISSING: <why>"
# on stderr); anything else is a harness error.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
GUEST=$HERE/guest
VARIANT=
ROOT_TAR=
BINARY=
IMAGES=
USER_DATA=
OUT=
# Room left free in the image for what the guest writes (journal, docker's
# state; later phases load images). The file is sparse: unused room costs
# nothing on the host.
FREE_MB=2048
HOSTNAME_=nodeprep-test

log() { echo "make-disk.sh: $*" >&2; }
prereq_missing() { echo "PREREQ-MISSING: $*" >&2; exit 77; }
die() { echo "make-disk.sh: error: $*" >&2; exit 1; }

STARTED=$(date +%s.%N)
elapsed() { awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

while [ $# -gt 0 ]; do
    case $1 in
        --variant) VARIANT=$2; shift 2 ;;
        --root-tar) ROOT_TAR=$2; shift 2 ;;
        --binary) BINARY=$2; shift 2 ;;
        --images) IMAGES=$2; shift 2 ;;
        --user-data) USER_DATA=$2; shift 2 ;;
        --deb) DEB=$2; shift 2 ;;
        --upgrade-deb) UPGRADE_DEB=$2; shift 2 ;;
        --server-standin) SERVER_STANDIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
case $VARIANT in nm | plain | resolved-podman) ;; *) die "--variant: unknown variant '$VARIANT'" ;; esac
[ -f "${ROOT_TAR:-/nonexistent}" ] || die "--root-tar: no such file: ${ROOT_TAR:-(none)}"
[ -x "${BINARY:-/nonexistent}" ] || die "--binary: not an executable: ${BINARY:-(none)}"
[ -f "${IMAGES:-/nonexistent}" ] || die "--images: no such file: ${IMAGES:-(none)}"
[ -f "${USER_DATA:-/nonexistent}" ] || die "--user-data: no such file: ${USER_DATA:-(none)}"
[ -f "${DEB:-/nonexistent}" ] || die "--deb: no such file: ${DEB:-(none)}"
[ -f "${UPGRADE_DEB:-/nonexistent}" ] || die "--upgrade-deb: no such file: ${UPGRADE_DEB:-(none)}"
[ -x "${SERVER_STANDIN:-/nonexistent}" ] || die "--server-standin: not an executable: ${SERVER_STANDIN:-(none)}"
[ -n "$OUT" ] || die "--out DIR is required"
[ "$(id -u)" = 0 ] || prereq_missing "make-disk.sh must run as root (the image keeps the root's owners)"
command -v mkfs.ext4 >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
command -v mkfs.ext4 >/dev/null 2>&1 || prereq_missing "mkfs.ext4 not found (apt-get install e2fsprogs)"

mkdir -p "$OUT"
rm -f "$OUT/disk.img" "$OUT/vmlinuz" "$OUT/initrd.img"

# The root is unpacked in a tmpfs when there is one with room: on this
# machine's ext4 (mounted with "discard") deleting a 700 MB tree afterwards
# costs tens of seconds.
STAGE_PARENT=$OUT
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1)" -gt $((3 * 1024 * 1024)) ] 2>/dev/null; then
    STAGE_PARENT=/dev/shm
fi
STAGE=$(mktemp -d "$STAGE_PARENT/nodeprep-debian-vm.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

tar -C "$STAGE" --numeric-owner --xattrs --xattrs-include='*' -xpf "$ROOT_TAR"

# ------------------------------------------------------------ kernel ----
# The root has exactly one kernel (linux-image-amd64's dependency).
KERNEL=$(find "$STAGE/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-* in $ROOT_TAR"
KREL=${KERNEL##*/vmlinuz-}
[ -f "$STAGE/boot/initrd.img-$KREL" ] || die "no /boot/initrd.img-$KREL in $ROOT_TAR"
cp "$KERNEL" "$OUT/vmlinuz"
cp "$STAGE/boot/initrd.img-$KREL" "$OUT/initrd.img"

# ------------------------------------------------------ nodeprep + test ----
# The user data's runcmd installs the package from here, as
# configs/cloud-init.yaml installs it from NODEPREP_DEB_URL.
install -d -m 0755 "$STAGE/var/lib/nodeprep-test"
install -m 0755 "$BINARY" "$STAGE/var/lib/nodeprep-test/nodeprep"
install -m 0644 "$DEB" "$STAGE/var/lib/nodeprep-test/nodeprep.deb"
install -m 0644 "$UPGRADE_DEB" "$STAGE/var/lib/nodeprep-test/nodeprep-upgrade.deb"
install -D -m 0644 "$GUEST/package-steps.sh" "$STAGE/usr/local/lib/nodeprep-test/package-steps.sh"
# The root drops every man page and doc when dpkg unpacks (build-root.sh's
# path-exclude, kept in the root's dpkg config); the package's own are
# part of what the scenario checks (`man nodeprep`). Read after
# 99mmdebstrap, so the includes win. The directories too: dpkg does not
# create an excluded parent of an included file (measured: "unable to
# create '/usr/share/man/man8/nodeprep.8.gz.dpkg-new'").
printf 'path-include=%s\n' /usr/share/man/man8 /usr/share/man/man8/nodeprep.8.gz \
    /usr/share/doc/nodeprep /usr/share/doc/nodeprep/examples '/usr/share/doc/nodeprep/*' \
    >"$STAGE/etc/dpkg/dpkg.cfg.d/nodeprep-test"
# man-db's dpkg trigger rebuilds its index after every install and removal
# (mandb); `man nodeprep` finds the page without it. Off, as Debian's
# man-db/auto-update does it: the package steps install and remove the
# package four times, each under TCG.
rm -f "$STAGE/var/lib/man-db/auto-update"
install -m 0644 "$IMAGES" "$STAGE/var/lib/nodeprep-test/images.tar"
install -D -m 0755 "$GUEST/scenario.sh" "$STAGE/usr/local/lib/nodeprep-test/scenario.sh"
install -D -m 0644 "$GUEST/lib.sh" "$STAGE/usr/local/lib/nodeprep-test/lib.sh"
rm -rf "$STAGE/etc/nodeprep" "$STAGE/usr/local/bin/nodeprep"

# The cluster's servers, as the user data's retry_join names them: a consul
# STAND-IN (NOT Consul) running as a single server at 10.0.0.10 (on the
# uplink's peer), started by nodeprep-test-servers.service.
SERVER=$STAGE/var/lib/nodeprep-test/server
install -D -m 0755 "$SERVER_STANDIN" "$STAGE/usr/local/lib/nodeprep-test/consul-standin"
install -d -m 0755 "$SERVER/config" "$SERVER/data"
echo '{"client_addr": "10.0.0.10", "bind_addr": "10.0.0.10", "ports": {"http": 8500, "dns": 8600}}' \
    >"$SERVER/config/interfaces.json"
echo '{"datacenter": "dc1", "server": true, "bootstrap_expect": 1, "node_name": "consul-server-1"}' \
    >"$SERVER/config/agent.json"

# The site's DNS server: a responder at 192.0.2.53 (on the uplink's peer).
install -D -m 0755 "$GUEST/upstream-dns.py" "$STAGE/usr/local/lib/nodeprep-test/upstream-dns.py"
echo "$VARIANT" >"$STAGE/var/lib/nodeprep-test/variant"

UNITS=$STAGE/etc/systemd/system
for unit in nodeprep-test.service nodeprep-uplink.service nodeprep-test-servers.service nodeprep-test-upstream.service; do
    install -D -m 0644 "$GUEST/$unit" "$UNITS/$unit"
    # What `systemctl enable` would do (both are WantedBy=multi-user.target).
    mkdir -p "$UNITS/multi-user.target.wants"
    ln -sf "/etc/systemd/system/$unit" "$UNITS/multi-user.target.wants/$unit"
done
# apt's timers would try to reach a mirror (there is no network; they would
# only fail, but nothing in the VM should even try).
for timer in apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$UNITS/$timer"
done

# ------------------------------------------------------------ cloud-init ----
install -D -m 0644 "$GUEST/90-nodeprep-test.cfg" "$STAGE/etc/cloud/cloud.cfg.d/90-nodeprep-test.cfg"
install -D -m 0644 "$USER_DATA" "$STAGE/var/lib/cloud/seed/nocloud/user-data"
# The user data keeps configs/cloud-init.yaml's `packages:` (dnsmasq,
# docker.io: already in the root), so cloud-init's
# package-update-upgrade-install runs `apt-get update` and `apt-get install`.
# With mmdebstrap's sources.list and no network, apt-get update only warns
# ("Failed to fetch ... Some index files failed to download", exit 0,
# measured in this root): cloud-init would not end in error, but apt would
# still try to reach the mirror from a VM that must send nothing anywhere.
# So the image has no apt sources at all: `apt-get update` has nothing to
# fetch, and `apt-get install` finds both packages installed ("already the
# newest version"). Debian's cloud.cfg sets apt: preserve_sources_list:
# true, so cloud-init does not write a sources.list back.
rm -f "$STAGE/etc/apt/sources.list"
rm -rf "$STAGE/etc/apt/sources.list.d"
mkdir -p "$STAGE/etc/apt/sources.list.d"
install -D -m 0644 "$GUEST/meta-data" "$STAGE/var/lib/cloud/seed/nocloud/meta-data"

# ------------------------------------------------------- host identity ----
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$STAGE/etc/fstab"
echo "$HOSTNAME_" >"$STAGE/etc/hostname"
cat >"$STAGE/etc/hosts" <<EOF
127.0.0.1 localhost
127.0.1.1 $HOSTNAME_
::1 localhost ip6-localhost ip6-loopback
EOF
# mmdebstrap leaves the build machine's resolv.conf in the root (when
# systemd-resolved is not there to make it its stub). The VM has no network:
# nothing in it may aim at an address outside the VM. The variant section
# above gives the host the site's server (192.0.2.53, inside the VM).
if [ ! -L "$STAGE/etc/resolv.conf" ] && ! grep -qx 'nameserver 192.0.2.53' "$STAGE/etc/resolv.conf" 2>/dev/null; then
    rm -f "$STAGE/etc/resolv.conf"
    echo "nameserver 192.0.2.53" >"$STAGE/etc/resolv.conf"
fi

# mmdebstrap's eatmydata hook leaves /usr/bin/eatmydata behind without its
# library (its customize hook keeps the wrapper when dpkg merely knows the
# package name). cloud-init runs apt through eatmydata when that is on
# PATH, and every apt call then printed "ERROR: ld.so: object
# 'libeatmydata.so' from LD_PRELOAD cannot be preloaded". No package owns
# it here, and a real host has none: remove it.
if [ -e "$STAGE/usr/bin/eatmydata" ] && [ ! -e "$STAGE/var/lib/dpkg/info/eatmydata.list" ]; then
    rm -f "$STAGE/usr/bin/eatmydata"
fi

# ----------------------------------------------------------- variant ----
if [ "$VARIANT" = nm ]; then
    # NetworkManager runs, as Debian's package enables it. The stand-in
    # uplink (a veth pair that nodeprep-uplink.service makes and addresses
    # with `ip`, the VM having no NIC) is the image's own business, as a
    # cloud image's NIC configuration would be: NetworkManager leaves it
    # alone and makes no DHCP profile for it.
    install -d -m 0755 "$STAGE/etc/NetworkManager/conf.d"
    printf '[main]\nno-auto-default=*\n\n[keyfile]\nunmanaged-devices=interface-name:uplink;interface-name:uplink-peer\n' \
        >"$STAGE/etc/NetworkManager/conf.d/50-nodeprep-test-uplink.conf"
else
    # NetworkManager would take over the uplink the test makes with `ip`;
    # these variants do not run it.
    ln -sf /dev/null "$UNITS/NetworkManager.service"
    ln -sf /dev/null "$UNITS/NetworkManager-wait-online.service"
fi
purge() {
    # The package's maintainer scripts run inside the root; nothing there
    # needs /proc or a running systemd for a purge.
    chroot "$STAGE" dpkg --purge "$@" >&2 || die "dpkg --purge $* in the root failed"
}
case $VARIANT in
    nm | resolved-podman)
        # The site's DNS server, given to resolved the way an image does.
        install -d -m 0755 "$STAGE/etc/systemd/resolved.conf.d"
        printf '[Resolve]\nDNS=192.0.2.53\n' >"$STAGE/etc/systemd/resolved.conf.d/50-site.conf"
        ;;
esac
case $VARIANT in
    plain)
        purge systemd-resolved
        rm -f "$STAGE/etc/resolv.conf"
        echo "nameserver 192.0.2.53" >"$STAGE/etc/resolv.conf"
        ;;
    resolved-podman)
        # No dnsmasq, and Podman the only engine: docker.io goes (and
        # the Docker socket with it).
        purge dnsmasq docker.io
        # Podman 4.3 at shutdown: systemd stops the containers' scopes
        # directly, and conmon restarts each restart-always container
        # ("container restart" in the journal) until systemd kills its
        # libpod-conmon scope at the stop timeout, 90 s by default (seen in
        # this VM; podman issue 19815). The containers come back at boot
        # all the same; a shorter timeout for those scopes (a prefix
        # drop-in, which reaches Podman's transient scopes) only spares the
        # wait. Nothing nodeprep does is measured by it.
        install -d -m 0755 "$STAGE/etc/systemd/system/libpod-conmon-.scope.d"
        printf '[Scope]\nTimeoutStopSec=10s\n' >"$STAGE/etc/systemd/system/libpod-conmon-.scope.d/50-nodeprep-test.conf"
        ;;
esac
if [ "$VARIANT" != resolved-podman ]; then
    # The image's own Docker setting, which nodeprep's daemon.json merge keeps.
    install -d -m 0755 "$STAGE/etc/docker"
    echo '{ "log-driver": "journald" }' >"$STAGE/etc/docker/daemon.json"
fi

# ------------------------------------------------- before nodeprep ----
# How the host was before nodeprep touched it, for the scenario's check that
# `nodeprep remove` puts it back (phase 3).
PRE=$STAGE/var/lib/nodeprep-test/pre
install -d -m 0755 "$PRE"
if [ -e "$STAGE/etc/environment" ]; then
    cp -p "$STAGE/etc/environment" "$PRE/environment"
else
    echo absent >"$PRE/environment.absent"
fi
[ ! -e "$STAGE/etc/docker/daemon.json" ] || cp -p "$STAGE/etc/docker/daemon.json" "$PRE/daemon.json"
# (a regular file in the plain variant; a link to resolved's stub otherwise)
cp -P "$STAGE/etc/resolv.conf" "$PRE/resolv.conf"
if [ -e "$UNITS/multi-user.target.wants/systemd-networkd.service" ]; then
    echo enabled >"$PRE/networkd"
else
    echo disabled >"$PRE/networkd"
fi

# --------------------------------------------------------------- image ----
used_mb=$(du -sm "$STAGE" | cut -f1)
size_mb=$((used_mb + FREE_MB))
mkfs.ext4 -q -F -L nodeprep-root -d "$STAGE" "$OUT/disk.img" "${size_mb}M" >&2 ||
    die "mkfs.ext4 -d failed"

secs=$(elapsed)
log "made $OUT/disk.img (${size_mb} MB, ${used_mb} MB used) with kernel $KREL in ${secs}s"
echo "DISK=$OUT/disk.img"
echo "KERNEL=$OUT/vmlinuz"
echo "INITRD=$OUT/initrd.img"
echo "KERNEL_RELEASE=$KREL"
echo "DISK_SECONDS=$secs"
