# Runs in L1 (guest-images/bench.sh starts it). virtio-blk sequential O_DIRECT reads in L2, 4 KiB
# and 1 MiB requests (queue depth 1: dd), from a disk image in L1's tmpfs, for:
#   lkvm-none     lkvm, no vIOMMU
#   lkvm-strict   lkvm --viommu virtio, guest iommu.strict=1 (UNMAP + sync after every request)
#   lkvm-lazy     lkvm --viommu virtio, guest iommu.strict=0 (UNMAPs batched by the flush queue)
#   lkvm-strict-poll200, lkvm-lazy-poll200   the same with --viommu virtio,poll=200: the adaptive
#                 request-queue poller (off by default), to see what it does here
#   lkvm-strict-pollUS, lkvm-lazy-pollUS   any other window; lkvm-strict-nopoll, lkvm-lazy-nopoll:
#                 poll=0 spelt out (the default)
#   lkvm-tables-strict, lkvm-tables-lazy   lkvm --viommu virtio,tables=on with our viommu_tables
#                 driver (rigtables=1): page-table handover, iommu.strict=1 / 0
#   qemu-none     Debian's QEMU, virtio-blk-pci (modern only: iommu_platform needs it)
#   qemu-strict   QEMU, virtio-blk-pci,iommu_platform=on + virtio-iommu-pci, iommu.strict=1
#   qemu-lazy     the same with iommu.strict=0
# Each configuration boots N times (default 1; alternating, so host noise hits all alike); each boot
# reads each size REPS times (default 3). Results are medians over all runs, in MB/s (1e6 bytes/s),
# and ratios. For lkvm behind a vIOMMU also the virtio-iommu requests per MiB read, per block size,
# from `lkvm stat` taken while L2 pauses between the sizes (rigstatpause): a figure the rig's
# slowness does not distort. Lines starting with RIG-BENCH are the results (copy:
# /mnt/results/blk-bench.txt).
# Environment: N, REPS, BENCH_MB (disk size, default 64), COUNT_4K (default 1024), COUNT_1M
# (default 64), CONFIGS (default: all of the above but the poll variants other than poll200,
# separated by spaces or commas).
. /mnt/rig/lib.sh

N=${N:-1}
REPS=${REPS:-3}
BENCH_MB=${BENCH_MB:-64}
COUNT_4K=${COUNT_4K:-1024}
COUNT_1M=${COUNT_1M:-64}
CONFIGS=$(echo "${CONFIGS:-lkvm-none lkvm-strict lkvm-lazy lkvm-tables-strict lkvm-tables-lazy lkvm-strict-poll200 lkvm-lazy-poll200 qemu-none qemu-strict qemu-lazy}" | tr ',' ' ')
L2_TIMEOUT=${L2_TIMEOUT:-300}
DATA=/tmp/blk-bench.tsv
REQS=/tmp/blk-bench-reqs.tsv   # CONFIG BS REQUESTS-PER-MIB, one line per boot
: >"$DATA"
: >"$REQS"
bad=0

command -v lkvm >/dev/null 2>&1 || { echo "blk-bench: no lkvm in /mnt/bin; measuring QEMU only"; CONFIGS=$(echo "$CONFIGS" | tr ' ' '\n' | grep -v '^lkvm' | tr '\n' ' '); }

IMG=/tmp/blk-bench.img
mkdisk "$IMG" "$BENCH_MB" random
CHECKS="rigchecks=blkread rigblkdev=vda rigblkread=4k:$COUNT_4K,1M:$COUNT_1M rigreps=$REPS"
STAT_PAUSE=2

# stat_points TAG : in the background, `lkvm stat TAG` into /tmp/TAG.stat.I each time L2 prints
# RIG-L2-STAT-POINT i=I (I = 0 before the 4 KiB reads, 1 before the 1 MiB reads, 2 after them).
stat_points() {
  (
    _i=0 _w=0
    while [ $_i -lt 3 ] && [ $_w -lt 6000 ]; do
      if grep -q "RIG-L2-STAT-POINT i=$_i " "/tmp/l2-$1.log" 2>/dev/null; then
        rig_capture 10 "/tmp/$1.stat.$_i" lkvm stat "$1"
        _i=$((_i + 1))
      else
        sleep 0.1; _w=$((_w + 1))
      fi
    done
  ) &
  STAT_JOB=$!
}
# stat_requests FILE : the virtio-iommu's request count in an `lkvm stat` output
stat_requests() { sed -n 's/^iommu .*[ ]requests=\([0-9]*\).*/\1/p' "$1" 2>/dev/null | head -n 1; }
# record_requests CONFIG TAG : requests per MiB for each block size, from the three snapshots
record_requests() {
  _r0=$(stat_requests "/tmp/$2.stat.0"); _r1=$(stat_requests "/tmp/$2.stat.1"); _r2=$(stat_requests "/tmp/$2.stat.2")
  [ -n "$_r0" ] && [ -n "$_r1" ] && [ -n "$_r2" ] || { echo "bench: $2: no lkvm stat snapshots"; return; }
  awk -v c="$1" -v a="$_r0" -v b="$_r1" -v d="$_r2" -v m4="$((4096 * COUNT_4K * REPS))" -v m1="$((1048576 * COUNT_1M * REPS))" \
    'BEGIN { printf "%s 4k %.2f\n%s 1M %.2f\n", c, (b - a) / (m4 / 1048576), c, (d - b) / (m1 / 1048576) }' >>"$REQS"
  rm -f "/tmp/$2.stat."*
}

bench_run() {  # bench_run CONFIG I
  _cfg=$1 _tag=bench-$1-$2
  case $_cfg in
    lkvm-*)
      _vi=""; _mode=""
      case $_cfg in
        lkvm-strict) _vi="--viommu virtio"; _mode="iommu.strict=1" ;;
        lkvm-tables-strict) _vi="--viommu virtio,tables=on"; _mode="iommu.strict=1 rigtables=1" ;;
        lkvm-tables-lazy) _vi="--viommu virtio,tables=on"; _mode="iommu.strict=0 rigtables=1" ;;
        lkvm-lazy) _vi="--viommu virtio"; _mode="iommu.strict=0" ;;
        lkvm-strict-nopoll) _vi="--viommu virtio,poll=0"; _mode="iommu.strict=1" ;;
        lkvm-lazy-nopoll) _vi="--viommu virtio,poll=0"; _mode="iommu.strict=0" ;;
        lkvm-strict-poll[0-9]*) _vi="--viommu virtio,poll=${_cfg#lkvm-strict-poll}"; _mode="iommu.strict=1" ;;
        lkvm-lazy-poll[0-9]*) _vi="--viommu virtio,poll=${_cfg#lkvm-lazy-poll}"; _mode="iommu.strict=0" ;;
      esac
      _pause=""
      if [ -n "$_vi" ]; then _pause="rigstatpause=$STAT_PAUSE"; stat_points "$_tag"; fi
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -n none -c 1 -m 256 --name "$_tag" --console serial \
        -d "$IMG,ro" $_vi -p "console=ttyS0 quiet panic=-1 $_mode $CHECKS $_pause"
      if [ -n "$_vi" ]; then wait "$STAT_JOB" 2>/dev/null; record_requests "$_cfg" "$_tag"; fi ;;
    qemu-*)
      _dev="-device virtio-blk-pci,drive=d0,disable-legacy=on"; _mode=""
      case $_cfg in
        qemu-strict) _dev="-device virtio-iommu-pci -device virtio-blk-pci,drive=d0,iommu_platform=on,disable-legacy=on"; _mode="iommu.strict=1" ;;
        qemu-lazy) _dev="-device virtio-iommu-pci -device virtio-blk-pci,drive=d0,iommu_platform=on,disable-legacy=on"; _mode="iommu.strict=0" ;;
      esac
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio -drive "file=$IMG,if=none,id=d0,format=raw,readonly=on" $_dev \
        -append "console=ttyAMA0 quiet panic=-1 $_mode $CHECKS" ;;
  esac
  blkread_record "$_cfg" "$_tag" "$DATA" || bad=1
}

bench_rounds "$N" $CONFIGS

med() { bench_median "$DATA" "$1" "$2"; }  # med CONFIG BS
reqs() { bench_median "$REQS" "$1" "$2"; } # reqs CONFIG BS : median requests per MiB

{
  echo "RIG-BENCH virtio-blk sequential O_DIRECT reads in L2 (dd, QD1), ${BENCH_MB} MiB image in L1 tmpfs; N=$N boots x $REPS reps; median MB/s"
  for c in $CONFIGS; do
    echo "RIG-BENCH blk $c 4k=$(med "$c" 4k) 1M=$(med "$c" 1M) runs=$(awk -v c="$c" '$1 == c' "$DATA" | wc -l)"
  done
  for bs in 4k 1M; do
    ln=$(med lkvm-none $bs); ls=$(med lkvm-strict $bs); ll=$(med lkvm-lazy $bs)
    qn=$(med qemu-none $bs); qs=$(med qemu-strict $bs); ql=$(med qemu-lazy $bs)
    echo "RIG-BENCH blk ratio bs=$bs lkvm strict/none=$(ratio "$ls" "$ln") lazy/none=$(ratio "$ll" "$ln")" \
      "qemu strict/none=$(ratio "$qs" "$qn") lazy/none=$(ratio "$ql" "$qn")" \
      "lkvm/qemu none=$(ratio "$ln" "$qn") strict=$(ratio "$ls" "$qs") lazy=$(ratio "$ll" "$ql")" \
      "poll200/default strict=$(ratio "$(med lkvm-strict-poll200 $bs)" "$ls") lazy=$(ratio "$(med lkvm-lazy-poll200 $bs)" "$ll")"
    ts=$(med lkvm-tables-strict $bs); tl=$(med lkvm-tables-lazy $bs)
    echo "RIG-BENCH blk tables bs=$bs strict/none=$(ratio "$ts" "$ln") lazy/none=$(ratio "$tl" "$ln")" \
      "strict/map-strict=$(ratio "$ts" "$ls") lazy/map-lazy=$(ratio "$tl" "$ll")" \
      "strict/qemu-strict=$(ratio "$ts" "$qs") lazy/qemu-lazy=$(ratio "$tl" "$ql")"
    echo "RIG-BENCH blk requests-per-MiB bs=$bs map-strict=$(reqs lkvm-strict $bs) map-lazy=$(reqs lkvm-lazy $bs)" \
      "tables-strict=$(reqs lkvm-tables-strict $bs) tables-lazy=$(reqs lkvm-tables-lazy $bs)" \
      "map/tables strict=$(ratio "$(reqs lkvm-strict $bs)" "$(reqs lkvm-tables-strict $bs)")" \
      "lazy=$(ratio "$(reqs lkvm-lazy $bs)" "$(reqs lkvm-tables-lazy $bs)")"
  done
  echo "RIG-BENCH raw: config bs mbps"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
  echo "RIG-BENCH raw requests: config bs requests-per-MiB"
  sed 's/^/RIG-BENCH raw requests: /' "$REQS"
} | tee /tmp/blk-bench.txt
cp /tmp/blk-bench.txt "$RIG_RESULTS/blk-bench.txt" 2>/dev/null
rm -f "$IMG"
exit $bad
