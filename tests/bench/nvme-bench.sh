# Runs in L1 (guest-images/bench.sh starts it). The L1 NVMe (behind QEMU's SMMUv3) assigned to L2
# with VFIO; L2 reads it sequentially with O_DIRECT, 4 KiB and 1 MiB requests (dd, queue depth 1):
#   lkvm-none     lkvm --vfio-pci, no vIOMMU (all guest RAM mapped at boot)
#   lkvm-strict   lkvm --vfio-pci --viommu vfio, guest iommu.strict=1 (MAP + UNMAP per request)
#   lkvm-lazy     the same with iommu.strict=0 (UNMAPs batched by the guest's flush queue)
#   qemu-none     Debian's QEMU, -device vfio-pci
#   qemu-strict   QEMU, -device virtio-iommu-pci -device vfio-pci, iommu.strict=1
# Each configuration boots N times (default 1, alternating); each boot reads each size REPS times
# (default 3). Medians in MB/s (1e6 bytes/s) and ratios; RIG-BENCH lines are the results (copy:
# /mnt/results/nvme-bench.txt). Environment: N, REPS, COUNT_4K (default 1024), COUNT_1M (default
# 64), CONFIGS (default: the five above; space or comma separated, so that
# `run-l1.sh tests/bench/nvme-bench.sh CONFIGS=lkvm-strict,qemu-strict` works).
. /mnt/rig/lib.sh

N=${N:-1}
REPS=${REPS:-3}
COUNT_4K=${COUNT_4K:-1024}
COUNT_1M=${COUNT_1M:-64}
CONFIGS=$(echo "${CONFIGS:-lkvm-none lkvm-strict lkvm-lazy qemu-none qemu-strict}" | tr ',' ' ')  # commas: from a kernel command line
L2_TIMEOUT=${L2_TIMEOUT:-400}
DATA=/tmp/nvme-bench.tsv
: >"$DATA"
bad=0

command -v lkvm >/dev/null 2>&1 || { echo "nvme-bench: no lkvm in /mnt/bin; measuring QEMU only"; CONFIGS=$(echo "$CONFIGS" | tr ' ' '\n' | grep -v '^lkvm' | tr '\n' ' '); }
B=$(nvme_bdf) || { echo "nvme-bench: no NVMe controller in L1"; exit 1; }
G=$(bind_vfio "$B") || { echo "nvme-bench: cannot bind $B to vfio-pci"; exit 1; }
echo "nvme-bench: $B (IOMMU group $G) on vfio-pci"
CHECKS="rigchecks=nvme,blkread rigblkdev=nvme0n1 rigblkread=4k:$COUNT_4K,1M:$COUNT_1M rigreps=$REPS"

bench_run() {  # bench_run CONFIG I
  _cfg=$1 _tag=nvme-$1-$2
  case $_cfg in
    lkvm-*)
      _vi=""; _mode=""
      case $_cfg in lkvm-strict) _vi="--viommu vfio"; _mode="iommu.strict=1" ;; lkvm-lazy) _vi="--viommu vfio"; _mode="iommu.strict=0" ;; esac
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -n none -c 1 -m 256 --name "$_tag" --console serial \
        --vfio-pci "$B" $_vi -p "console=ttyS0 quiet panic=-1 $_mode $CHECKS" ;;
    qemu-*)
      _dev="-device vfio-pci,host=$B"; _mode=""
      case $_cfg in
        qemu-strict) _dev="-device virtio-iommu-pci -device vfio-pci,host=$B"; _mode="iommu.strict=1" ;;
        qemu-lazy) _dev="-device virtio-iommu-pci -device vfio-pci,host=$B"; _mode="iommu.strict=0" ;;
      esac
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio $_dev -append "console=ttyAMA0 quiet panic=-1 $_mode $CHECKS" ;;
  esac
  blkread_record "$_cfg" "$_tag" "$DATA" || bad=1
}

bench_rounds "$N" $CONFIGS
unbind_vfio "$B"

med() { bench_median "$DATA" "$1" "$2"; }  # med CONFIG BS

{
  echo "RIG-BENCH NVMe (VFIO) sequential O_DIRECT reads in L2 (dd, QD1), 4k x $COUNT_4K and 1M x $COUNT_1M; N=$N boots x $REPS reps; median MB/s"
  for c in $CONFIGS; do
    echo "RIG-BENCH nvme $c 4k=$(med "$c" 4k) 1M=$(med "$c" 1M) runs=$(awk -v c="$c" '$1 == c' "$DATA" | wc -l)"
  done
  for bs in 4k 1M; do
    ln=$(med lkvm-none $bs); ls=$(med lkvm-strict $bs); ll=$(med lkvm-lazy $bs)
    qn=$(med qemu-none $bs); qs=$(med qemu-strict $bs)
    echo "RIG-BENCH nvme ratio bs=$bs lkvm strict/none=$(ratio "$ls" "$ln") lazy/none=$(ratio "$ll" "$ln")" \
      "qemu strict/none=$(ratio "$qs" "$qn")" \
      "lkvm/qemu none=$(ratio "$ln" "$qn") strict=$(ratio "$ls" "$qs") lazy/qemu-strict=$(ratio "$ll" "$qs")"
  done
  echo "RIG-BENCH raw: config bs mbps"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
} | tee /tmp/nvme-bench.txt
cp /tmp/nvme-bench.txt "$RIG_RESULTS/nvme-bench.txt" 2>/dev/null
exit $bad
