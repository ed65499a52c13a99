#!/bin/bash
# `make bench`: the host-native micro-benchmarks (every executable in BUILD/bench/), then the boot,
# virtio-blk, NVMe (VFIO) and virtio-net benchmarks in the nested rig (lkvm against QEMU,
# guest-images/bench.sh).
#   tests/bench/run.sh [BUILD]      BUILD defaults to "build"
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-${BUILD:-build}}
rc=0
for b in "$BUILD"/bench/*; do
  [ -f "$b" ] && [ -x "$b" ] || continue
  echo "==== $(basename "$b")"
  "$b" || { echo "bench: $(basename "$b") failed"; rc=1; }
done
echo "==== rig benchmarks (lkvm vs QEMU): L2 boot, virtio-blk and NVMe reads with and without a vIOMMU, TCP L2->L1"
LKVM_BIN=${LKVM_BIN:-$BUILD/arm64/lkvm} guest-images/bench.sh || rc=1
exit $rc
