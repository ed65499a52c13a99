#!/bin/bash
# Benchmarks in the nested rig: lkvm against Debian's QEMU, both on KVM inside L1, one L1 boot per
# benchmark:
#   boot   L2 boot time and memory (tests/bench/boot-bench.sh), N runs per VMM
#   blk    virtio-blk sequential O_DIRECT reads, 4 KiB and 1 MiB, without a vIOMMU and behind one in
#          strict and lazy mode, MAP/UNMAP and page-table handover (--viommu virtio,tables=on), and
#          virtio-iommu requests per MiB (tests/bench/blk-bench.sh), BLK_N boots per configuration
#   nvme   the L1 NVMe assigned with VFIO: O_DIRECT reads, 4 KiB and 1 MiB, without a vIOMMU and
#          behind --viommu vfio strict/lazy, against QEMU vfio-pci and virtio-iommu-pci + vfio-pci
#          (tests/bench/nvme-bench.sh), NVME_N boots per configuration
#   p9     virtio-9p bulk copy, 64 MiB written and read back through a share of an L1 directory,
#          lkvm --9p against QEMU -fsdev local + virtio-9p-pci (tests/bench/p9-bench.sh), P9_N boots
#          per VMM
#   net    virtio-net TCP throughput L2 -> L1 through busybox nc: lkvm -n mode=user, mode=tap and
#          user behind --viommu virtio strict, against QEMU -netdev user, -netdev tap and
#          virtio-iommu-pci + virtio-net-pci (tests/bench/net-bench.sh), NET_N boots per configuration
#
#   guest-images/bench.sh [N]        N runs per VMM for the boot benchmark (default 5)
#
# Environment: BENCHES (default "boot blk nvme p9 net"), BLK_N (default 1), BLK_REPS (default 3), NVME_N (1), NVME_REPS (3),
# P9_N (1), P9_REPS (1), NET_N (1), NET_REPS (2), NET_MB (16),
# RIG_NO_BUILD=1 (skip build.sh), LKVM_BIN and the rest as for run-l1.sh.
# Prints the RIG-BENCH lines; the full logs are guest-images/out/l1-{boot,blk,nvme,p9,net}-bench.log.
# TCG on a shared 2-core host is noisy: compare ratios from the same run, not absolute figures.
set -euo pipefail

RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG/.." && pwd)
N=${1:-${N:-5}}
case $N in ''|*[!0-9]*) echo "bench: N must be a number, got '$N'" >&2; exit 2 ;; esac

[ "${RIG_NO_BUILD:-0}" = 1 ] || "$RIG/build.sh"
# Show progress (one RIG-RESULT line per L2 run) and the results; the whole console goes to the log.
set +e
rc=0
for b in ${BENCHES:-boot blk nvme p9 net}; do
  case $b in
    boot) timeout=$((120 + N * 2 * 60)); args=("N=$N") ;;
    blk) timeout=$((300 + ${BLK_N:-1} * 10 * 150)); args=("N=${BLK_N:-1}" "REPS=${BLK_REPS:-3}") ;;
    nvme) timeout=$((300 + ${NVME_N:-1} * 5 * 200)); args=("N=${NVME_N:-1}" "REPS=${NVME_REPS:-3}") ;;
    p9) timeout=$((300 + ${P9_N:-1} * 2 * (300 + ${P9_REPS:-1} * 64 * 20))); args=("N=${P9_N:-1}" "REPS=${P9_REPS:-1}") ;;
    net) timeout=$((300 + ${NET_N:-1} * 6 * 200)); args=("N=${NET_N:-1}" "REPS=${NET_REPS:-2}" "NET_MB=${NET_MB:-16}") ;;
    *) echo "bench: unknown benchmark '$b' (boot, blk, nvme, p9, net)"; rc=2; continue ;;
  esac
  RIG_TIMEOUT=${RIG_TIMEOUT:-$timeout} "$RIG/run-l1.sh" "$REPO/tests/bench/$b-bench.sh" "${args[@]}" 2>&1 |
    grep --line-buffered -E '^(RIG-RESULT|RIG-BENCH|[a-z0-9]+-bench:|run-l1:)' | grep --line-buffered -v '^RIG-BENCH raw:'
  r=${PIPESTATUS[0]}
  [ "$r" = 0 ] || rc=$r
  echo "bench: full console output in $RIG/out/l1-$b-bench.log"
done
exit "$rc"
