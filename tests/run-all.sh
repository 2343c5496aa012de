#!/usr/bin/env bash
# The whole test suite: installs the prerequisites, checks formatting and
# lints, runs every test (unit, integration, namespace, container and VM
# tiers, and the stand-ins' own tests) and the benchmarks. Run as root: the
# namespace, Docker and VM tests need it.
#
# Strict by itself: a test whose prerequisite is missing fails the run
# instead of skipping, whether or not the caller set CI (`sudo` drops the
# environment, so the README's `sudo ./tests/run-all.sh` would otherwise
# turn every missing prerequisite into a skip). Run single tiers with
# `cargo test --test NAME` to get the skip-with-a-message behaviour.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=true

tests/setup.sh

# A real dockerd for the container tests. When none answers, start one for
# this run and stop it when done. Likewise Podman's API service, which
# tests/podman.rs starts (tests/podman/ensure-podman.sh) when none answers.
cleanup=()
if ! docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; then
    tests/docker/ensure-dockerd.sh
    cleanup+=('kill "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null || true')
fi
if [ "$(curl -s --max-time 2 --unix-socket /run/podman/podman.sock http://d/_ping 2>/dev/null)" != OK ]; then
    cleanup+=('kill "$(cat /run/nodeprep-test-podman.pid 2>/dev/null)" 2>/dev/null || true')
fi
trap 'for c in "${cleanup[@]}"; do eval "$c"; done' EXIT

# The Debian VM tier (tests/debian_vm.rs) boots whole hosts under qemu
# without KVM: most of the suite's time, during which qemu keeps about one
# core busy (each boot prints the CPU time it used: 1.0-1.35 s per second
# on a 2-core machine). So it runs in the background from here on, beside
# everything else (its qemu lock still lets one guest run at a time,
# vm_kernel's included); its output goes to a log printed when it ends.
# The benchmarks wait for it, so that their figures are taken on a quiet
# machine.
mkdir -p target
vm_log=target/debian-vm-tier.log
# setsid: its own process group, ended as a whole (qemu included) if
# this script stops early.
setsid cargo test --test debian_vm >"$vm_log" 2>&1 &
vm_pid=$!
cleanup=('kill -- -'"$vm_pid"' 2>/dev/null || kill '"$vm_pid"' 2>/dev/null || true' "${cleanup[@]}")
echo "run-all: the Debian VM tier runs in the background (pid $vm_pid, log $vm_log)"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The stand-ins are a crate of their own (standins/): the same checks.
(
    cd standins
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo test
)
# The Debian package, built with the README's command from this clone, and
# lintian on it; tests/package.rs checks this same package (NODEPREP_TEST_DEB).
deb=$(packaging/build-deb.sh | sed -n 's/^DEB=//p')
dpkg -c "$deb"
packaging/lintian.sh "$deb"
export NODEPREP_TEST_DEB=$deb
# Every other test binary, and the VM tier's own unit tests (its host
# tests are the background job's).
cargo test -- --skip debian_vm_

vm_status=0
wait "$vm_pid" || vm_status=$?
echo "===== the Debian VM tier (cargo test --test debian_vm): exit $vm_status ====="
cat "$vm_log"
[ "$vm_status" -eq 0 ] || { echo "run-all: the Debian VM tier failed (exit $vm_status)" >&2; exit 1; }

cargo bench --bench converge --bench probes
