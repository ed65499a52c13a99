#!/bin/bash
# `make fuzz`: runs every libFuzzer target in BUILDDIR (executables named fuzz_*) for SECONDS each,
# starting from its seed corpus tests/fuzz/corpus/<target without fuzz_>/. New inputs go to a
# scratch directory under BUILDDIR (the checked-in corpus only changes by hand, after a
# `-merge=1`); crashes go to BUILDDIR/fuzz-artifacts/<target>/ and fail the run.
#   tests/fuzz/run.sh BUILDDIR SECONDS [extra libFuzzer flags...]
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILDDIR SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
builddir=$1
seconds=$2
shift 2
rc=0
found=0
for bin in "$builddir"/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    found=1
    target=$(basename "$bin")
    corpus=tests/fuzz/corpus/${target#fuzz_}
    scratch=$builddir/scratch-$target
    artifacts=$builddir/fuzz-artifacts/$target
    mkdir -p "$corpus" "$scratch" "$artifacts"
    echo "==== $target: ${seconds}s from $corpus"
    log=$builddir/$target.log
    if "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" \
        "$scratch" "$corpus" >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" | sed 's/^/    /'
    else
        echo "fuzz: $target FAILED (log: $log, inputs: $artifacts/)"
        grep -E 'ERROR|SUMMARY' "$log" | head -5 | sed 's/^/    /'
        rc=1
    fi
done
if [ "$found" = 0 ]; then
    echo "fuzz: no fuzz_* binaries in $builddir" >&2
    exit 1
fi
exit $rc
