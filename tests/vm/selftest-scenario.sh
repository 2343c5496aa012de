#!/bin/sh
# Harness self-test: a guest scenario that uses busybox only (no nodeprep).
# It proves that the kernel boots, the modules load, and that every busybox
# command guest-scenario.sh relies on works in this guest, and that the
# marker protocol carries both PASS and FAIL (with the step transcript) to
# the host. Run by the `vm_harness_selftest` test in tests/vm_kernel.rs.
. /lib/nodeprep-test/lib.sh

st_modules() {
    # numdummies=0: without it dummy.ko creates dummy0 itself on load.
    load_module dummy numdummies=0
    load_module bridge
    grep -q '^dummy ' /proc/modules || why "dummy not in /proc/modules"
    ! link_exists dummy0 || why "dummy0 exists although numdummies=0"
}

st_ip_dummy() {
    run ip link add dummy0 type dummy
    run ip addr add 169.254.1.1/32 dev dummy0
    run ip link set dummy0 up
    expect_link_up dummy0
    expect_addr dummy0 169.254.1.1/32
    run ip link set dummy0 down
    ! link_is_up dummy0 || why "dummy0 still UP after 'ip link set down'"
    run ip addr add 10.99.0.1/32 dev dummy0
    run ip addr del 169.254.1.1/32 dev dummy0
    expect_no_addr dummy0 169.254.1.1/32
    expect_addr dummy0 10.99.0.1/32
    run ip link del dummy0
    ! link_exists dummy0 || why "dummy0 still there after 'ip link del'"
}

st_ip_bridge() {
    run ip link add dummy0 type bridge
    [ -e /sys/class/net/dummy0/bridge ] || why "/sys/class/net/dummy0/bridge missing for a bridge"
    run ip link del dummy0
}

st_route() {
    run ip link add uplink type dummy
    run ip addr add 192.0.2.10/24 dev uplink
    run ip link set uplink up
    run ip route add default via 192.0.2.1
    ip route show >>"$STEP_LOG"
    ip route show | grep -q '^default via 192.0.2.1 dev uplink' || why "no default route via uplink"
    # /proc/net/route is what a program without netlink would read
    # (gateway 192.0.2.1 in little-endian hex).
    grep -q '^uplink[[:space:]]00000000[[:space:]]010200C0' /proc/net/route || why "default route not in /proc/net/route"
    run ip route del default
    run ip link del uplink
}

st_rmmod_quirk() {
    # The module creates dummy0 by itself when loaded without numdummies=0.
    run rmmod dummy
    ! grep -q '^dummy ' /proc/modules || why "dummy still loaded after rmmod"
    run insmod "$MODDIR/dummy.ko"
    link_exists dummy0 || why "dummy.ko without numdummies=0 did not create dummy0"
    ! link_is_up dummy0 || why "auto-created dummy0 is already UP"
    run ip link del dummy0
    run rmmod dummy
    load_module dummy numdummies=0
}

st_su() {
    # busybox setpriv has no --reuid; su as root needs no password.
    uid=$(su -s /bin/sh -c 'id -u' nobody)
    [ "$uid" = 65534 ] || why "su did not drop to uid 65534 (got '$uid')"
}

st_files() {
    mkdir -p /etc/consul.d
    echo '{}' >/etc/consul.d/interfaces.json
    grep -q '{}' /etc/consul.d/interfaces.json || why "cannot write /etc"
    rm -rf /etc/consul.d
}

st_deliberate_fail() {
    run echo "this transcript line must reach the host"
    why "deliberate failure (harness self-test)"
}

run_step selftest-modules st_modules
run_step selftest-ip-dummy st_ip_dummy
run_step selftest-ip-bridge st_ip_bridge
run_step selftest-route st_route
run_step selftest-rmmod-quirk st_rmmod_quirk
run_step selftest-su-nobody st_su
run_step selftest-etc-writable st_files
run_step selftest-deliberate-fail st_deliberate_fail
scenario_end
