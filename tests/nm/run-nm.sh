#!/usr/bin/env bash
# Runs a real NetworkManager for nodeprep's tests, in private network and
# mount namespaces, on a private D-Bus system bus, so it sees only its own
# loopback and touches nothing of the host's:
#
#   run-nm.sh DIR
#
# DIR/conns is its keyfile directory ([keyfile] path), DIR/confd is mounted
# over /etc/NetworkManager/conf.d, DIR/state over /var/lib/NetworkManager,
# a tmpfs over /run/NetworkManager; the bus listens on DIR/bus.sock. Writes
# NetworkManager's pid to DIR/nm.pid once `nmcli general` answers, then
# stays until killed (it is the namespace's init: killing it ends
# NetworkManager and the bus). Enter with
#   DBUS_SYSTEM_BUS_ADDRESS=unix:path=DIR/bus.sock nsenter -t $(cat DIR/nm.pid) -n -m CMD
#
# Needs root, unshare and nsenter (util-linux), dbus-daemon and NetworkManager
# (Debian: dbus, network-manager). Exit 77 when something is missing.
set -euo pipefail
DIR=$1
for c in unshare nsenter dbus-daemon NetworkManager nmcli; do
    command -v "$c" >/dev/null 2>&1 || { echo "run-nm: CANNOT RUN NETWORKMANAGER: $c is missing" >&2; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "run-nm: CANNOT RUN NETWORKMANAGER: not root" >&2; exit 77; }
mkdir -p "$DIR/conns" "$DIR/confd" "$DIR/state"
cat >"$DIR/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$DIR/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow send_type="method_call"/>
    <allow receive_sender="*"/>
    <allow receive_type="method_return"/>
    <allow receive_type="signal"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
CONF
cat >"$DIR/nm.conf" <<CONF
[main]
plugins=keyfile
dns=none
[keyfile]
path=$DIR/conns
[logging]
level=INFO
CONF
exec unshare --net --mount --fork --kill-child -- bash -euc '
    DIR=$1
    mount --make-rprivate /
    mkdir -p /run/NetworkManager
    mount -t tmpfs tmpfs /run/NetworkManager
    mount --bind "$DIR/state" /var/lib/NetworkManager
    mount --bind "$DIR/confd" /etc/NetworkManager/conf.d
    ip link set lo up
    dbus-daemon --config-file="$DIR/bus.conf" --nofork --nopidfile &
    export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$DIR/bus.sock
    for _ in $(seq 100); do [ -S "$DIR/bus.sock" ] && break; sleep 0.05; done
    NetworkManager --no-daemon --config="$DIR/nm.conf" >"$DIR/nm.log" 2>&1 &
    nm=$!
    for _ in $(seq 200); do
        nmcli -t -f RUNNING general 2>/dev/null | grep -q running && break
        sleep 0.05
    done
    echo "$nm" >"$DIR/nm.pid"
    wait "$nm"
' run-nm "$DIR"
