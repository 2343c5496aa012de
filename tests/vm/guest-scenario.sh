#!/bin/sh
# The nodeprep real-kernel scenario, run as root inside the test VM (busybox
# initramfs, Debian kernel with dummy.ko) by /init. See tests/vm_kernel.rs,
# which builds the VM with tests/vm/build.sh, boots it and checks that every
# step below printed "NODEPREP-STEP <name> PASS".
#
# nodeprep runs in live mode: links are made through netlink in the guest's
# only network namespace and files go to the initramfs' /etc. The guest has
# no systemd, so only the `link` and `consul-config` resources are applied
# (--only). No config file exists, so the embedded default applies:
# dummy0 with 169.254.1.1/32, up; /etc/consul.d/interfaces.json with
# bind_addr "auto".
#
# Steps depend on the state left by the ones before them, in this order.
. /lib/nodeprep-test/lib.sh

ADDR=169.254.1.1/32
OTHER=10.99.0.1/32

# Steps that start from a converged dummy0 say so first, so that a failure
# of an earlier step shows up as such instead of as a confusing `ip` error.
require_converged_link() {
    link_exists dummy0 && link_is_up dummy0 && has_addr dummy0 "$ADDR" ||
        why "precondition: dummy0 up with $ADDR (left by the steps before) is not there"
}

step_guest_setup() {
    # numdummies=0: loaded without it, dummy.ko creates dummy0 by itself
    # (see step dummy-module-autocreate); nodeprep must create it here.
    load_module dummy numdummies=0
    load_module bridge
    ! link_exists dummy0 || why "dummy0 exists before nodeprep ran"
    [ ! -e /etc/nodeprep/nodeprep.toml ] || why "unexpected /etc/nodeprep/nodeprep.toml in the guest"
}

step_binary_runs() {
    [ -x /usr/local/bin/nodeprep ] || why "/usr/local/bin/nodeprep missing from the initramfs"
    # A dynamically linked binary fails here with "not found" (no libc in
    # the initramfs): it must be built with +crt-static.
    np --help
    expect_rc 0
}

step_fresh_apply() {
    np_planned apply --only link
    expect_rc 0
    expect_one_json_line
    grep -qF '"command":"apply"' "$NP_OUT" || why 'JSON lacks "command":"apply"'
    expect_status link changed
    expect_link_up dummy0
    expect_addr dummy0 "$ADDR"
}

step_second_apply_noop() {
    np --format json apply --only link
    expect_rc 0
    expect_one_json_line
    expect_summary changed 0
    expect_status link ok
}

step_check_clean() {
    np --format json check --only link
    expect_rc 0
    expect_one_json_line
    expect_status link ok
    expect_summary drift 0
}

step_down_drift() {
    require_converged_link
    run ip link set dummy0 down
    np --format json check --only link
    expect_rc 2
    expect_status link drift
    np_planned apply --only link
    expect_rc 0
    expect_status link changed
    expect_link_up dummy0
    expect_addr dummy0 "$ADDR"
    np --format json check --only link
    expect_rc 0
}

step_dry_run_pending() {
    require_converged_link
    run ip link set dummy0 down
    np --format json apply --dry-run --only link
    expect_rc 2
    ! link_is_up dummy0 || why "apply --dry-run brought dummy0 up"
    np --format json apply --only link
    expect_rc 0
    expect_link_up dummy0
}

step_addr_removed() {
    require_converged_link
    run ip addr del "$ADDR" dev dummy0
    np --format json check --only link
    expect_rc 2
    expect_status link drift
    np_planned apply --only link
    expect_rc 0
    expect_status link changed
    expect_addr dummy0 "$ADDR"
    np --format json check --only link
    expect_rc 0
}

step_other_address_kept() {
    require_converged_link
    # Addresses nodeprep does not manage are reported, never removed.
    run ip addr add "$OTHER" dev dummy0
    np --format json check --only link
    expect_rc 0
    expect_status link ok
    expect_output_contains "${OTHER%/*}"
    np --format json apply --only link
    expect_rc 0
    expect_status link ok
    expect_addr dummy0 "$OTHER"
    expect_addr dummy0 "$ADDR"
    run ip addr del "$OTHER" dev dummy0
}

step_not_root_refused() {
    require_converged_link
    echo "\$ su nobody -c 'nodeprep --format json apply --only link'" >>"$STEP_LOG"
    NP_RC=0
    # busybox setpriv has no --reuid; su as root needs no password.
    timeout "$NP_TIMEOUT" su -s /bin/sh -c 'exec nodeprep --format json apply --only link' nobody \
        >"$NP_OUT" 2>"$NP_ERR" || NP_RC=$?
    { echo "  -> exit $NP_RC$(np_timed_out)"; cat "$NP_OUT" "$NP_ERR"; } >>"$STEP_LOG"
    expect_rc 77
    expect_link_up dummy0
    expect_addr dummy0 "$ADDR"
}

step_bridge_refused() {
    if link_exists dummy0; then run ip link del dummy0; fi
    run ip link add dummy0 type bridge
    np apply --only link
    expect_rc 1
    expect_output_contains bridge
    np --format json apply --only link
    expect_rc 1
    expect_one_json_line
    expect_status link failed
    expect_output_contains bridge
    # nodeprep never deletes a link it did not make.
    [ -e /sys/class/net/dummy0/bridge ] || why "the dummy0 bridge is gone after apply"
    run ip link del dummy0
}

step_relink_after_bridge() {
    np --format json apply --only link
    expect_rc 0
    expect_status link changed
    expect_link_up dummy0
    expect_addr dummy0 "$ADDR"
}

# A stand-in uplink: the VM has no network card (-nic none), so a dummy
# link with an address plays the interface holding the default route.
make_uplink() {
    link_exists uplink && return 0
    run ip link add uplink type dummy
    run ip addr add 192.0.2.10/24 dev uplink
    run ip link set uplink up
}

step_bind_auto_no_route() {
    make_uplink
    ! ip route show | grep -q '^default' || why "a default route exists already"
    run rm -f /etc/consul.d/interfaces.json
    np apply --only consul-config
    expect_rc 1
    expect_output_contains bind_addr
    np --format json apply --only consul-config
    expect_rc 1
    expect_status consul-config failed
}

step_bind_auto() {
    make_uplink
    run ip route add default via 192.0.2.1 dev uplink
    np_planned apply --only consul-config
    expect_rc 0
    expect_status consul-config changed
    f=/etc/consul.d/interfaces.json
    [ -f "$f" ] || why "$f not written"
    { echo "--- $f"; cat "$f"; } >>"$STEP_LOG"
    grep -qF '"bind_addr": "192.0.2.10"' "$f" || why "$f lacks \"bind_addr\": \"192.0.2.10\""
    grep -qF '"client_addr": "127.0.0.1 169.254.1.1"' "$f" || why "$f lacks \"client_addr\": \"127.0.0.1 169.254.1.1\""
    np --format json apply --only consul-config
    expect_rc 0
    expect_summary changed 0
    np --format json check --only consul-config
    expect_rc 0
}

step_dummy_module_autocreate() {
    # Kernel quirk: dummy.ko loaded without numdummies=0 creates dummy0
    # itself (down, no address). nodeprep must adopt that link, not fail on
    # "exists already".
    if link_exists dummy0; then run ip link del dummy0; fi
    if link_exists uplink; then run ip link del uplink; fi
    run rmmod dummy
    run insmod "$MODDIR/dummy.ko"
    link_exists dummy0 || why "dummy.ko did not create dummy0 by itself"
    np --format json apply --only link
    expect_rc 0
    expect_status link changed
    expect_link_up dummy0
    expect_addr dummy0 "$ADDR"
    np --format json check --only link
    expect_rc 0
}

step_dnsmasq_missing() {
    # This guest has no dnsmasq: the resource must say so and write nothing.
    ! command -v dnsmasq >/dev/null 2>&1 || why "precondition: the guest has a dnsmasq"
    np --format json apply --only dnsmasq
    expect_rc 1
    expect_status dnsmasq failed
    expect_output_contains "dnsmasq is not installed"
    [ ! -e /etc/dnsmasq.d/consul.conf ] || why "/etc/dnsmasq.d/consul.conf was written"
}

# nodeprep creates dummy0 (none exists), remove deletes it again.
step_remove_created_link() {
    if link_exists dummy0; then run ip link del dummy0; fi
    run rmmod dummy
    load_module dummy numdummies=0
    ! link_exists dummy0 || why "precondition: dummy0 exists before apply"
    np_planned apply --only link
    expect_rc 0
    expect_link_up dummy0
    np --format json remove --dry-run --only link
    expect_rc 2
    link_exists dummy0 || why "remove --dry-run deleted dummy0"
    np_planned remove --only link
    expect_rc 0
    expect_status link changed
    ! link_exists dummy0 || why "dummy0 is still there after remove: nodeprep created it"
    np --format json remove --only link
    expect_rc 0
    expect_summary changed 0
    # The record no longer claims the link (consul-config's files, written
    # by earlier steps, are still recorded).
    run cat /var/lib/nodeprep/state.json
    ! grep -q '"dummy0"' /var/lib/nodeprep/state.json || why "the state record still lists dummy0 after remove deleted it"
}

# A dummy0 that was there before nodeprep, with an address of its own:
# remove takes only nodeprep's address and leaves the link and the other
# address.
step_remove_keeps_foreign_link() {
    if link_exists dummy0; then run ip link del dummy0; fi
    run ip link add dummy0 type dummy
    run ip addr add "$OTHER" dev dummy0
    run ip link set dummy0 up
    np_planned apply --only link
    expect_rc 0
    expect_addr dummy0 "$ADDR"
    np_planned remove --only link
    expect_rc 0
    link_exists dummy0 || why "remove deleted a dummy0 nodeprep did not create"
    expect_addr dummy0 "$OTHER"
    expect_no_addr dummy0 "$ADDR"
    expect_output_contains "not created by nodeprep"
    run ip link del dummy0
}

# nodeprep's own dummy0, on which someone put another address since: the
# link stays with that address; only nodeprep's goes.
step_remove_shared_link() {
    ! link_exists dummy0 || run ip link del dummy0
    np_planned apply --only link
    expect_rc 0
    run ip addr add "$OTHER" dev dummy0
    np_planned remove --only link
    expect_rc 0
    link_exists dummy0 || why "dummy0 went although it holds $OTHER"
    expect_addr dummy0 "$OTHER"
    expect_no_addr dummy0 "$ADDR"
    run ip link del dummy0
}

run_step guest-setup step_guest_setup
run_step binary-runs step_binary_runs
run_step fresh-apply step_fresh_apply
run_step second-apply-noop step_second_apply_noop
run_step check-clean step_check_clean
run_step down-drift step_down_drift
run_step dry-run-pending step_dry_run_pending
run_step addr-removed step_addr_removed
run_step other-address-kept step_other_address_kept
run_step not-root-refused step_not_root_refused
run_step bridge-refused step_bridge_refused
run_step relink-after-bridge step_relink_after_bridge
run_step bind-auto-no-route step_bind_auto_no_route
run_step bind-auto step_bind_auto
run_step dummy-module-autocreate step_dummy_module_autocreate
run_step dnsmasq-missing step_dnsmasq_missing
run_step remove-created-link step_remove_created_link
run_step remove-keeps-foreign-link step_remove_keeps_foreign_link
run_step remove-shared-link step_remove_shared_link
scenario_end
