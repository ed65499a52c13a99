#!/bin/bash
# Boot benchmark in the nested rig: lkvm against Debian's QEMU, both on KVM inside L1, in one L1
# boot (see tests/bench/boot-bench.sh for what is measured).
#
#   guest-images/bench.sh [N]        N runs per VMM (default 5)
#
# Environment: RIG_NO_BUILD=1 (skip build.sh), LKVM_BIN and the rest as for run-l1.sh.
# Prints the RIG-BENCH lines at the end; the full log is guest-images/out/l1-boot-bench.log.
# TCG on a shared 2-core host is noisy: compare ratios from the same run, not absolute seconds.
set -euo pipefail

RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG/.." && pwd)
N=${1:-${N:-5}}
case $N in ''|*[!0-9]*) echo "bench: N must be a number, got '$N'" >&2; exit 2 ;; esac

[ "${RIG_NO_BUILD:-0}" = 1 ] || "$RIG/build.sh"
# Show progress (one RIG-RESULT line per L2 run) and the results; the whole console goes to the log.
set +e
RIG_TIMEOUT=${RIG_TIMEOUT:-$((120 + N * 2 * 60))} "$RIG/run-l1.sh" "$REPO/tests/bench/boot-bench.sh" "N=$N" 2>&1 |
  grep --line-buffered -E '^(RIG-RESULT|RIG-BENCH|boot-bench:|run-l1:)' | grep --line-buffered -v '^RIG-BENCH raw:'
rc=${PIPESTATUS[0]}
echo "bench: full console output in $RIG/out/l1-boot-bench.log"
exit "$rc"
