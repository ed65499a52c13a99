# Runs in L1 (guest-images/bench.sh starts it). virtio-blk sequential O_DIRECT reads in L2, 4 KiB
# and 1 MiB requests (queue depth 1: dd), from a disk image in L1's tmpfs, for:
#   lkvm-none     lkvm, no vIOMMU
#   lkvm-strict   lkvm --viommu virtio, guest iommu.strict=1 (UNMAP + sync after every request)
#   lkvm-lazy     lkvm --viommu virtio, guest iommu.strict=0 (UNMAPs batched by the flush queue)
#   lkvm-strict-poll200, lkvm-lazy-poll200   the same with --viommu virtio,poll=200: the adaptive
#                 request-queue poller (off by default), to see what it does here
#   lkvm-strict-pollUS, lkvm-lazy-pollUS   any other window; lkvm-strict-nopoll, lkvm-lazy-nopoll:
#                 poll=0 spelt out (the default)
#   qemu-none     Debian's QEMU, virtio-blk-pci (modern only: iommu_platform needs it)
#   qemu-strict   QEMU, virtio-blk-pci,iommu_platform=on + virtio-iommu-pci, iommu.strict=1
#   qemu-lazy     the same with iommu.strict=0
# Each configuration boots N times (default 1; alternating, so host noise hits all alike); each boot
# reads each size REPS times (default 3). Results are medians over all runs, in MB/s (1e6 bytes/s),
# and ratios. Lines starting with RIG-BENCH are the results (copy: /mnt/results/blk-bench.txt).
# Environment: N, REPS, BENCH_MB (disk size, default 64), COUNT_4K (default 1024), COUNT_1M
# (default 64), CONFIGS (default: all six above, separated by spaces or commas).
. /mnt/rig/lib.sh

N=${N:-1}
REPS=${REPS:-3}
BENCH_MB=${BENCH_MB:-64}
COUNT_4K=${COUNT_4K:-1024}
COUNT_1M=${COUNT_1M:-64}
CONFIGS=$(echo "${CONFIGS:-lkvm-none lkvm-strict lkvm-lazy lkvm-strict-poll200 lkvm-lazy-poll200 qemu-none qemu-strict qemu-lazy}" | tr ',' ' ')
L2_TIMEOUT=${L2_TIMEOUT:-300}
DATA=/tmp/blk-bench.tsv
: >"$DATA"
bad=0

command -v lkvm >/dev/null 2>&1 || { echo "blk-bench: no lkvm in /mnt/bin; measuring QEMU only"; CONFIGS=$(echo "$CONFIGS" | tr ' ' '\n' | grep -v '^lkvm' | tr '\n' ' '); }

IMG=/tmp/blk-bench.img
mkdisk "$IMG" "$BENCH_MB" random
CHECKS="rigchecks=blkread rigblkdev=vda rigblkread=4k:$COUNT_4K,1M:$COUNT_1M rigreps=$REPS"

bench_run() {  # bench_run CONFIG I
  _cfg=$1 _tag=bench-$1-$2
  case $_cfg in
    lkvm-*)
      _vi=""; _mode=""
      case $_cfg in
        lkvm-strict) _vi="--viommu virtio"; _mode="iommu.strict=1" ;;
        lkvm-lazy) _vi="--viommu virtio"; _mode="iommu.strict=0" ;;
        lkvm-strict-nopoll) _vi="--viommu virtio,poll=0"; _mode="iommu.strict=1" ;;
        lkvm-lazy-nopoll) _vi="--viommu virtio,poll=0"; _mode="iommu.strict=0" ;;
        lkvm-strict-poll[0-9]*) _vi="--viommu virtio,poll=${_cfg#lkvm-strict-poll}"; _mode="iommu.strict=1" ;;
        lkvm-lazy-poll[0-9]*) _vi="--viommu virtio,poll=${_cfg#lkvm-lazy-poll}"; _mode="iommu.strict=0" ;;
      esac
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -n none -c 1 -m 256 --name "$_tag" --console serial \
        -d "$IMG,ro" $_vi -p "console=ttyS0 quiet panic=-1 $_mode $CHECKS" ;;
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
  done
  echo "RIG-BENCH raw: config bs mbps"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
} | tee /tmp/blk-bench.txt
cp /tmp/blk-bench.txt "$RIG_RESULTS/blk-bench.txt" 2>/dev/null
rm -f "$IMG"
exit $bad
