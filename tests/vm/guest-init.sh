#!/bin/sh
# /init (PID 1) of the VM test initramfs built by tests/vm/build.sh.
# Mounts the pseudo file systems, brings up loopback, runs
# /guest-scenario.sh and powers the VM off. Everything goes to the serial
# console (console=ttyS0), which the host captures.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# If the initramfs had no /dev/console node the kernel started us without
# stdio; re-open the console now that devtmpfs provides it.
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp

# Keep kernel messages (module loading, link state changes) off the console
# so that they cannot split a marker line in two; "quiet" on the command
# line alone still lets warnings through.
echo 1 >/proc/sys/kernel/printk

hostname -F /etc/hostname
ip link set lo up

echo "NODEPREP-GUEST-BOOTED $(uname -r)"
/bin/sh /guest-scenario.sh
rc=$?
echo "NODEPREP-GUEST-SCENARIO-EXIT $rc"
sync
# poweroff -f calls reboot(2) directly (there is no init system to signal).
# Should it fail, PID 1 exiting panics the kernel, and panic=-1 plus qemu's
# -no-reboot turn that into a qemu exit as well.
poweroff -f
sleep 5
exit 1
