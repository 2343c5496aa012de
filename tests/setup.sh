#!/usr/bin/env bash
# Installs what the test suite needs on a Debian host (run as root). Safe to
# run again: apt skips what is installed.
#   qemu-system-x86, busybox-static, cpio  real-kernel VM tests (tests/vm)
#   mmdebstrap, e2fsprogs                  Debian VM tier (tests/debian-vm)
#   dnsmasq-base, bind9-dnsutils           real dnsmasq answering through nodeprep's file
#   iproute2, util-linux                   network namespaces (ip netns, unshare)
#   docker.io                              a real dockerd for the container tests
#   podman, curl                           rootful Podman's Docker-compatible API (tests/podman.rs)
#   network-manager, dbus                  a real NetworkManager in a namespace (tests/networkmanager.rs)
#   docker-registry                        a local registry to pull from (tests/registry/)
#   systemd, cloud-init, vagrant           systemd-analyze verify, cloud-init schema, vagrant validate
#   strace                                 the fault suite places signals and errors at exact syscalls
#   libpam-modules, libpam0g, python3      the real pam_env.so, read through libpam (tests/pam)
#   lintian, man-db, bash-completion, file the Debian package: lintian, `man`, bash completing from its files
#   cargo-deb (crates.io, pinned in packaging/build-deb.sh)   builds the package
#   prometheus-client (PyPI)               the reference parser for --format prometheus
set -euo pipefail

packages=(systemd cloud-init vagrant qemu-system-x86 busybox-static cpio mmdebstrap e2fsprogs dnsmasq-base bind9-dnsutils iproute2 util-linux docker.io podman curl network-manager dbus docker-registry strace libpam-modules libpam0g python3 lintian man-db bash-completion file)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The reference Prometheus text-format parser, to check --format prometheus.
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check prometheus-client
# cargo-deb, at the version the package build pins.
cargo_deb=$(sed -n 's/^CARGO_DEB_VERSION=//p' "$(dirname "$0")/../packaging/build-deb.sh")
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb" ]; then
    echo "setup: installing cargo-deb $cargo_deb"
    cargo install cargo-deb --version "$cargo_deb" --locked --quiet
fi
echo "setup: prerequisites present"
