#!/bin/sh
# Manual smoke test (root only; not part of `cargo test`, not an LXC harness):
# the static haimg-init as PID 1 of an lb "container" made with unshare —
# its own PID, mount, UTS and network namespace, an overlay of this host's
# root (so the host's Debian nginx and keepalived run), and the files the
# build and Proxmox would write. It prints the console, probes nginx on the
# member address and the VIP from inside, sends the halt signal and reports
# how long the stop took. Everything lives under a temp dir and a netns named
# after this shell's PID, removed on exit.
#
#   sh init/scripts/smoke-lb.sh [path/to/static/haimg-init]
set -eu
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/x86_64-unknown-linux-gnu/init/haimg-init}")
SLOT=${SLOT:-nginx1}
IP=${IP:-192.168.30.100}
W=$(mktemp -d /tmp/haimg-smoke.XXXXXX)
NS=haimg-smoke-$$
PID=
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    umount -R "$W/root" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
trap "exit 1" INT TERM PIPE HUP

mkdir -p "$W/upper/etc/haimg/templates" "$W/upper/etc/network" "$W/upper/sbin" "$W/work" "$W/root"
cp roles/lb/templates/* "$W/upper/etc/haimg/templates/"
echo lb > "$W/upper/etc/haimg/role"
python3 -c 'import json,yaml; print(json.dumps(yaml.safe_load(open("haimg.yaml"))))' > "$W/upper/etc/haimg/plan.json"
printf '{"role":"lb","version":"1.0.0","input_hash":"5m0ke000000000","source_date_epoch":0}\n' > "$W/upper/etc/haimg/image.json"
echo "$SLOT" > "$W/upper/etc/hostname"
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress %s/24\n\tgateway 192.168.30.1\n\n' "$IP" > "$W/upper/etc/network/interfaces"
cp "$BIN" "$W/upper/sbin/init"

ip netns add "$NS"
ip -n "$NS" link add eth0 type veth peer name eth0p
ip -n "$NS" link set eth0p up

# The container: overlay root, private mounts, PID 1 = haimg-init.
ip netns exec "$NS" unshare --pid --fork --mount --uts --propagation private sh -c "
    mount -t overlay overlay -o lowerdir=/,upperdir=$W/upper,workdir=$W/work $W/root
    mount --rbind /dev $W/root/dev
    mount --rbind /sys $W/root/sys
    hostname $SLOT
    exec chroot $W/root /usr/bin/env -i TERM=linux container=lxc /sbin/init
" > "$W/console" 2>&1 &
SH=$!

# Find PID 1 of the new namespace (the init) from here.
i=0
while [ -z "$PID" ] && [ $i -lt 200 ]; do
    for c in $(cat /proc/$SH/task/$SH/children 2>/dev/null); do
        for g in $(cat /proc/$c/task/$c/children 2>/dev/null) $c; do
            if [ "$(readlink /proc/$g/exe 2>/dev/null)" = "$W/root/sbin/init" ] || grep -q '^NSpid:.*[[:space:]]1$' /proc/$g/status 2>/dev/null; then PID=$g; fi
        done
    done
    i=$((i + 1)); sleep 0.05
done
[ -n "$PID" ] || { echo "init did not start"; cat "$W/console"; exit 1; }

# Wait for nginx to answer on the member address, then on the VIP.
for target in "$IP" 192.168.30.200; do
    i=0
    until ip netns exec "$NS" "$BIN" check-tcp "$target:80"; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "no answer on $target:80"; break; }; sleep 0.1
    done
done
ip netns exec "$NS" ip -4 -o addr show dev eth0
cat "/proc/$PID/root/run/haimg/status.json"

T0=$(date +%s%N)
kill -PWR "$PID"
while kill -0 "$PID" 2>/dev/null; do sleep 0.02; done
T1=$(date +%s%N)
wait $SH || true
PID=
echo "--- console"
cat "$W/console"
echo "--- halt took $(( (T1 - T0) / 1000000 )) ms"
