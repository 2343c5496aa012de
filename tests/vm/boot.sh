#!/bin/bash
# Boot a kernel + initramfs made by tests/vm/build.sh, by hand, the way
# tests/vm_kernel.rs does it, printing the serial console.
#
# Usage: tests/vm/boot.sh KERNEL INITRD [TIMEOUT_SECONDS]
#
# The Rust test runs qemu itself (same arguments, see vm_kernel.rs and
# tests/common/vm.rs) so it can enforce its timeout and keep the log; this
# script is for debugging a scenario interactively, e.g.:
#   tests/vm/build.sh --out /tmp/vm --binary target/x86_64-unknown-linux-gnu/debug/nodeprep
#   tests/vm/boot.sh /tmp/vm/vmlinuz /tmp/vm/initramfs.cpio
set -euo pipefail
KERNEL=${1:?kernel}
INITRD=${2:?initrd}
TIMEOUT=${3:-240}

# -accel tcg: KVM does not work on the development/CI machines.
# -nic none:  the VM must not have any network card (no traffic may leave
#             this machine); the scenario fakes an uplink with a dummy link.
# -no-reboot with panic=-1: a guest panic (e.g. /init dying) ends qemu
#             instead of rebooting in a loop.
exec timeout --kill-after=5 "$TIMEOUT" \
    qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp 1 \
    -nographic -no-reboot -nic none \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet" </dev/null
