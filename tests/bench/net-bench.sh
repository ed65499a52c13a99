# Runs in L1 (guest-images/bench.sh starts it). TCP throughput L2 -> L1: L2 sends NET_MB MiB of
# zeros through busybox nc to a listener in L1 and times the connection until nc exits (the
# receiver read everything and closed), REPS connections per boot, for:
#   lkvm-user     lkvm -n mode=user (libslirp), to the gateway 10.0.2.2 = L1's loopback
#   lkvm-tap      lkvm -n mode=tap (a tap lkvm creates, host_ip 192.168.33.1), vnet headers and offloads
#   lkvm-strict   lkvm -n mode=user --viommu virtio, guest iommu.strict=1
#   qemu-user     Debian's QEMU, -netdev user + virtio-net-pci
#   qemu-tap      QEMU, -netdev tap (a tap QEMU creates; its ifup script gives it 192.168.33.1), no vhost
#   qemu-strict   QEMU, -netdev user + virtio-net-pci,iommu_platform=on + virtio-iommu-pci, iommu.strict=1
# (romfile= : Debian's QEMU lacks the virtio-net option ROM on arm64, and the guest boots without one.)
# Each configuration boots N times (default 1; alternating, so host noise hits all alike). Results
# are medians over all connections, in MB/s (1e6 bytes/s), and ratios lkvm/QEMU. Lines starting
# with RIG-BENCH are the results (copy: /mnt/results/net-bench.txt). A connection counts only if
# L1 received every byte.
# Environment: N, REPS (default 2), NET_MB (default 16), CONFIGS (default: all six above, separated
# by spaces or commas).
. /mnt/rig/lib.sh

N=${N:-1}
REPS=${REPS:-2}
NET_MB=${NET_MB:-16}
BYTES=$((NET_MB * 1024 * 1024))
CONFIGS=$(echo "${CONFIGS:-lkvm-user lkvm-tap lkvm-strict qemu-user qemu-tap qemu-strict}" | tr ',' ' ')
L2_TIMEOUT=${L2_TIMEOUT:-400}
PORT=5100
DATA=/tmp/net-bench.tsv
: >"$DATA"
bad=0

command -v lkvm >/dev/null 2>&1 || { echo "net-bench: no lkvm in /mnt/bin; measuring QEMU only"; CONFIGS=$(echo "$CONFIGS" | tr ' ' '\n' | grep -v '^lkvm' | tr '\n' ' '); }
ip link set lo up 2>/dev/null
modprobe tun 2>/dev/null

# The listeners' stdin: a fifo this script holds open read-write (fd 8), so no listener sees EOF on
# it and shuts its side of the connection (busybox nc at the L2 end would stop sending at that).
rm -f /tmp/net-bench.hold && mkfifo /tmp/net-bench.hold
exec 8<>/tmp/net-bench.hold

# QEMU creates its tap and runs this with the tap's name once it exists.
printf '%s\n' '#!/bin/sh' 'ip addr add 192.168.33.1/24 dev "$1" && ip link set "$1" up' >/tmp/qemu-ifup
chmod +x /tmp/qemu-ifup

# sinks : one listener per connection of the next boot, on PORT..PORT+REPS-1, each writing what it
# receives to /tmp/net-sink.PORT
sinks() {
  _i=0 SINK_PIDS=""
  while [ $_i -lt "$REPS" ]; do
    timeout $L2_TIMEOUT nc -l -p $((PORT + _i)) </tmp/net-bench.hold >/tmp/net-sink.$((PORT + _i)) 2>/dev/null &
    SINK_PIDS="$SINK_PIDS $!"
    _i=$((_i + 1))
  done
  sleep 0.3
}
# record CONFIG TAG : the MB/s of each RIG-NET-SEND line of the last L2 run whose listener got all
# BYTES, into DATA; says why and fails otherwise
record() {
  _got=0
  for _line in $(tr -d '\r' <"$L2_LOG" | sed -n 's/^RIG-NET-SEND port=\([0-9]*\) .* mbps=\([0-9.]*\).*/\1:\2/p'); do
    _p=${_line%:*} _m=${_line#*:}
    _n=$(wc -c <"/tmp/net-sink.$_p" 2>/dev/null || echo 0)
    if [ "$_n" = "$BYTES" ]; then echo "$1 $_m" >>"$DATA"; _got=$((_got + 1))
    else echo "net-bench: $2 port $_p: L1 received $_n of $BYTES bytes"; fi
  done
  kill $SINK_PIDS 2>/dev/null; wait 2>/dev/null
  rm -f /tmp/net-sink.*
  if [ "$_got" != "$REPS" ]; then
    echo "net-bench: $2: $_got of $REPS connections complete (rc=$L2_RC): $(tr -d '\r' <"$L2_LOG" | grep -m1 'RIG-CHECK FAIL' | cut -c1-160)"
    return 1
  fi
}

USER_CHECKS="rigchecks=netsend rignetdst=10.0.2.2:$PORT rignetbytes=$BYTES rigreps=$REPS"
TAP_CHECKS="rigchecks=netsend rignetaddr=192.168.33.15/24 rignetdst=192.168.33.1:$PORT rignetbytes=$BYTES rigreps=$REPS"

bench_run() {  # bench_run CONFIG I
  _cfg=$1 _tag=net-$1-$2
  sinks
  case $_cfg in
    lkvm-user)
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -c 1 -m 256 --name "$_tag" --console serial \
        -n mode=user -p "console=ttyS0 quiet panic=-1 $USER_CHECKS" ;;
    lkvm-tap)
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -c 1 -m 256 --name "$_tag" --console serial \
        -n mode=tap,tapif=lkvmtap0,host_ip=192.168.33.1 -p "console=ttyS0 quiet panic=-1 $TAP_CHECKS" ;;
    lkvm-strict)
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -c 1 -m 256 --name "$_tag" --console serial \
        -n mode=user --viommu virtio -p "console=ttyS0 quiet panic=-1 iommu.strict=1 $USER_CHECKS" ;;
    qemu-user)
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio -netdev user,id=n0 \
        -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile= -append "console=ttyAMA0 quiet panic=-1 $USER_CHECKS" ;;
    qemu-tap)
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio \
        -netdev tap,id=n0,ifname=qemutap0,script=/tmp/qemu-ifup,downscript=no,vhost=off \
        -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile= -append "console=ttyAMA0 quiet panic=-1 $TAP_CHECKS" ;;
    qemu-strict)
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio -netdev user,id=n0 -device virtio-iommu-pci \
        -device virtio-net-pci,netdev=n0,iommu_platform=on,disable-legacy=on,romfile= \
        -append "console=ttyAMA0 quiet panic=-1 iommu.strict=1 $USER_CHECKS" ;;
  esac
  record "$_cfg" "$_tag" || bad=1
}

bench_rounds "$N" $CONFIGS
exec 8>&-
rm -f /tmp/net-bench.hold /tmp/qemu-ifup

med() { awk -v c="$1" '$1 == c { print $2 }' "$DATA" | median; }

{
  echo "RIG-BENCH virtio-net TCP L2->L1, busybox nc, $NET_MB MiB x $REPS connections per boot, N=$N boots; median MB/s"
  for c in $CONFIGS; do
    echo "RIG-BENCH net $c mbps=$(med "$c") runs=$(awk -v c="$c" '$1 == c' "$DATA" | wc -l)"
  done
  echo "RIG-BENCH net ratio lkvm/qemu user=$(ratio "$(med lkvm-user)" "$(med qemu-user)")" \
    "tap=$(ratio "$(med lkvm-tap)" "$(med qemu-tap)") strict=$(ratio "$(med lkvm-strict)" "$(med qemu-strict)")" \
    "strict/user lkvm=$(ratio "$(med lkvm-strict)" "$(med lkvm-user)") qemu=$(ratio "$(med qemu-strict)" "$(med qemu-user)")"
  echo "RIG-BENCH raw: config mbps"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
} | tee /tmp/net-bench.txt
cp /tmp/net-bench.txt "$RIG_RESULTS/net-bench.txt" 2>/dev/null
exit $bad
