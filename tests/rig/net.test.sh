# Runs in L1. lkvm -n/--network: virtio-net in L2 with Debian's virtio_net driver. One L1 boot:
#   user mode: DHCP gives 10.0.2.15; an 8 MiB file from a listener in L1 (reached through slirp's
#     gateway 10.0.2.2 = L1's loopback) arrives with a matching sha256; the same file sent from L1
#     through hostfwd=tcp:HOSTPORT-GUESTPORT into a listener in L2 too;
#     hostfwd listens on 127.0.0.1 only (no address given);
#   the same behind --viommu virtio with the guest's IOMMU strict (every DMA mapped and unmapped);
#   restrict=on: DHCP still answers, the gateway (L1's loopback) is out of the guest's reach;
#   tap mode: lkvm creates a tap in L1 (root) with host_ip/24, up, bridged to nothing; L2 pings
#     L1 and fetches the file over it;
#   mode=none: no NIC in L2; bad -n values and a tap name that is not a tap: one clear line, non-zero.
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-200}

A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD"
ip link set lo up 2>/dev/null
modprobe tun 2>/dev/null

mkdisk /tmp/netblob 8 urandom
SHA=$(file_sha /tmp/netblob)
BYTES=$((8 * 1024 * 1024))
SRC_PORT=5000

# serve PORT : one connection on 0.0.0.0:PORT gets the file (in the background, bounded).
serve() {
  timeout 150 nc -l -p "$1" </tmp/netblob >/dev/null 2>&1 &
  SERVE_PID=$!
}
# send_when_listening TAG HOSTPORT : once the L2 guest of TAG prints RIG-NET-LISTEN, send the
# file to localhost:HOSTPORT (hostfwd into the guest).
send_when_listening() {
  (
    _i=0
    while [ $_i -lt 1200 ] && ! grep -q RIG-NET-LISTEN "/tmp/l2-$1.log" 2>/dev/null; do sleep 0.1; _i=$((_i + 1)); done
    sleep 0.5
    # The hostfwd listener as the kernel sees it (local address, state 0A = LISTEN).
    grep -E "^ *[0-9]+: [0-9A-F]{8}:$(printf '%04X' "$2") [0-9A-F]{8}:0000 0A" /proc/net/tcp >"/tmp/l2-$1.hostfwd" 2>/dev/null
    timeout 150 nc 127.0.0.1 "$2" </tmp/netblob >/dev/null 2>&1
  ) &
}

# --- 0. bad input: one line naming the parameter, non-zero exit, no guest -----------------------------
rig_cli_error cli/net-mode 'mode=bridge' "$LKVM" run $K -p "$A" -n mode=bridge
rig_cli_error cli/net-mac 'guest_mac' "$LKVM" run $K -p "$A" -n guest_mac=52:54:00:zz:00:01
rig_cli_error cli/net-ip 'host_ip' "$LKVM" run $K -p "$A" -n host_ip=10.0.2
rig_cli_error cli/net-bad-tap 'tapif=lo' "$LKVM" run $K -p "$A" -n mode=tap,tapif=lo
# A hostfwd port already taken on the host.
timeout 60 nc -l -p 5999 </dev/null >/dev/null 2>&1 &
_busy=$!
sleep 0.3
rig_cli_error cli/net-hostfwd-busy 'hostfwd=tcp:127.0.0.1:5999' "$LKVM" run $K -p "$A" -n hostfwd=tcp:5999-22
kill "$_busy" 2>/dev/null

# --- 1. user mode: DHCP, outbound fetch through the gateway, hostfwd into the guest -------------------
# (The transfers once looked like stalls: L2's nc had stdin </dev/null, so it shut its sending
# side down at once and busybox nc at the L1 end then stopped sending; init-l2's nc_held keeps
# L2's nc stdin open.)
USER_CHECKS=netdhcp,netfetch,netlisten TAP_CHECKS=netdhcp,netping,netfetch
user_case() {  # TAG HOSTPORT EXTRA-LKVM-ARGS... -- EXTRA-CMDLINE
  _t=$1 _hp=$2; shift 2
  _args=""
  while [ $# -gt 0 ] && [ "$1" != -- ]; do _args="$_args $1"; shift; done
  shift
  serve $SRC_PORT
  send_when_listening "$_t" "$_hp"
  # shellcheck disable=SC2086
  run_l2 "$_t" "$LKVM" run $K -c 1 -m 256 --name "$_t" --console serial -n "mode=user,hostfwd=tcp:$_hp-7000" $_args \
    -p "$A $* rigchecks=$USER_CHECKS rignetip=10.0.2.15 rignetsrc=10.0.2.2:$SRC_PORT rignetport=7000 rignetsha=$SHA rignetbytes=$BYTES"
  # shellcheck disable=SC2046
  l2_expect "$_t" $(echo "$USER_CHECKS" | tr , " ")
  l2_expect_rc "$_t" 0
  if grep -q "0100007F:$(printf '%04X' "$_hp") " "/tmp/l2-$_t.hostfwd" 2>/dev/null; then
    rig_pass "$_t/hostfwd-loopback" "port $_hp listens on 127.0.0.1 only"
  else rig_fail "$_t/hostfwd-loopback" "listener on port $_hp: $(head -c 120 "/tmp/l2-$_t.hostfwd" 2>/dev/null)"; fi
  kill "$SERVE_PID" 2>/dev/null
  wait 2>/dev/null
}
user_case net-user 6001 --
user_case net-user-viommu 6002 --viommu virtio -- iommu.strict=1

# --- 1b. restrict=on: slirp answers DHCP, forwards nothing out (the fetch from the gateway gets no byte) --
serve $SRC_PORT
run_l2 net-restrict "$LKVM" run $K -c 1 -m 256 --name net-restrict --console serial -n mode=user,restrict=on \
  -p "$A rigchecks=netdhcp,netfetch rignetip=10.0.2.15 rignetsrc=10.0.2.2:$SRC_PORT rignetsha=$SHA rignetbytes=$BYTES"
l2_expect net-restrict netdhcp
if ! tr -d '\r' <"$L2_LOG" | grep -q "RIG-CHECK FAIL netfetch 0 bytes from"; then
  rig_fail net-restrict/gateway-blocked "the guest's fetch from 10.0.2.2:$SRC_PORT did not fail empty ($(_l2_state))"
elif ! kill -0 "$SERVE_PID" 2>/dev/null; then
  rig_fail net-restrict/gateway-blocked "the listener in L1 was reached"
else rig_pass net-restrict/gateway-blocked "no byte from 10.0.2.2:$SRC_PORT, the listener in L1 never saw a connection"; fi
kill "$SERVE_PID" 2>/dev/null
wait 2>/dev/null

# --- 2. tap mode: a tap lkvm creates in L1, nothing else on it -------------------------------------------
serve $SRC_PORT
run_l2 net-tap "$LKVM" run $K -c 1 -m 256 --name net-tap --console serial -n mode=tap,tapif=lkvmtap0,host_ip=192.168.33.1 \
  -p "$A rigchecks=$TAP_CHECKS rignetaddr=192.168.33.15/24 rignetip=192.168.33.15 rignetping=192.168.33.1 rignetsrc=192.168.33.1:$SRC_PORT rignetsha=$SHA rignetbytes=$BYTES"
# shellcheck disable=SC2046
l2_expect net-tap $(echo "$TAP_CHECKS" | tr , " ")
l2_expect_rc net-tap 0
kill "$SERVE_PID" 2>/dev/null
wait 2>/dev/null
if ip link show lkvmtap0 >/dev/null 2>&1; then rig_fail net-tap/gone "lkvmtap0 still exists after lkvm exited"
else rig_pass net-tap/gone "the tap lkvm created went with it"; fi

# --- 3. mode=none: accepted, no device -------------------------------------------------------------------
run_l2 net-none "$LKVM" run $K -c 1 -m 256 --name net-none --console serial -n mode=none -p "$A rigchecks=netnone"
l2_expect net-none netnone
l2_expect_rc net-none 0

rig_finish
