#!/bin/bash
# tests/run-all.sh [test|check]: the test run, in one of two tiers. Each prints a final
# "N passed, N failed" line and fails if any stage failed.
#
#   test   (`make test`, what CI runs; needs root and the nested rig) every stage below.
#   check  (`make check`, no root, no rig, minutes) the same stages without the three marked
#          [test]: citation, layer and format checks, unit tests, host-setup script tests, unit
#          tests under ASan+UBSan, fuzz corpora replayed under sanitizers, every benchmark built.
#
# Stages: citations, layers, format, unit (native), script tests, unit (ASan + UBSan), fuzz
# replays, benchmarks built (not run), [test] arm64 lkvm build, [test] rig tests. (`make test`
# runs the host setup, [test], before this script.)
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-test}
case $MODE in
    test | check) ;;
    *) echo "usage: tests/run-all.sh [test|check]" >&2; exit 2 ;;
esac
BUILD=${BUILD:-build}
JOBS=${JOBS:-2}
passed=0
failed=0
failures=()

stage() { printf '\n==== %s (%ds so far) ====\n' "$*" "$SECONDS"; }
count() {  # count NAME PASSED FAILED
    passed=$((passed + $2))
    failed=$((failed + $3))
    [ "$3" -gt 0 ] && failures+=("$1 ($3 failed)")
    printf -- '---- %s: %s passed, %s failed\n' "$1" "$2" "$3"
}
# A stage that produces a single pass/fail from its exit status.
single() {  # single NAME CMD...
    local name=$1
    shift
    if "$@"; then count "$name" 1 0; else count "$name" 0 1; fi
}
# A script that prints its own "NAME: N passed, N failed" last line.
counted_script() {  # counted_script NAME SCRIPT
    local name=$1 counts
    counts=$("$2" 2>&1 | tee /dev/stderr | sed -n "s/^$name: \\([0-9]*\\) passed, \\([0-9]*\\) failed\$/\\1 \\2/p")
    if [ -n "$counts" ]; then count "$name" $counts; else count "$name" 0 1; fi
}
# Run a doctest binary and count its test cases.
doctest_stage() {  # doctest_stage NAME BINARY [env...]
    local name=$1 bin=$2 log
    log=$(mktemp)
    "$bin" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local line p f
    line=$(grep -E '^\[doctest\] test cases:' "$log" | tail -1)
    p=$(echo "$line" | sed -n 's/.*| *\([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*| *\([0-9]*\) failed.*/\1/p')
    rm -f "$log"
    if [ -z "$p" ]; then count "$name" 0 1; return; fi
    # A crash after the summary (a sanitizer report at exit) is a failure too.
    [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && f=1
    count "$name" "$p" "${f:-0}"
}

stage "citations (every comment, test name, script and README cites what is in the tree)"
single "check-citations" tests/check-citations.sh
counted_script "check-citations.test" tests/check-citations.test.sh

stage "layers (every include points down: vmm/base < fdt < virtio < iommu < devices < vmm)"
single "check-layers" tests/check-layers.sh
counted_script "check-layers.test" tests/check-layers.test.sh

stage "format (clang-format --dry-run on the project's C++ sources; make format fixes)"
single "check-format" tests/check-format.sh

stage "unit tests (native)"
if make -s -j"$JOBS" BUILD="$BUILD" "$BUILD/native/unit-tests"; then
    doctest_stage "unit" "$BUILD/native/unit-tests"
else
    count "unit build" 0 1
fi

stage "script tests (setup-host package logic, fake dpkg/apt)"
for t in tests/guest-images/*_test.sh; do
    [ -x "$t" ] && single "$(basename "$t" .sh)" "$t"
done

stage "unit tests (ASan + UBSan)"
if make -s -j"$JOBS" BUILD="$BUILD" "$BUILD/asan/unit-tests"; then
    UBSAN_OPTIONS=print_stacktrace=1 doctest_stage "unit-asan" "$BUILD/asan/unit-tests"
else
    count "unit-asan build" 0 1
fi

stage "fuzz corpora replayed (libFuzzer, ASan + UBSan)"
if ls tests/fuzz/*.cpp >/dev/null 2>&1; then
    if make -s -j"$JOBS" BUILD="$BUILD" fuzz-build; then
        for bin in "$BUILD"/fuzz/fuzz_*; do
            [ -x "$bin" ] || continue
            target=$(basename "$bin")
            corpus=tests/fuzz/corpus/${target#fuzz_}
            mkdir -p "$BUILD/fuzz/scratch-$target" "$corpus"
            # Replay the seed corpus; `make test` adds a short bounded random run.
            runs=(-runs=0)
            [ "$MODE" = test ] && runs=(-runs=5000 -max_total_time=10)
            single "$target" "$bin" "${runs[@]}" -print_final_stats=0 "$BUILD/fuzz/scratch-$target" "$corpus"
        done
    else
        count "fuzz build" 0 1
    fi
fi

stage "benchmarks built (not run: their rig parts belong to make bench)"
single "bench-build" make -s -j"$JOBS" BUILD="$BUILD" bench-build

if [ "$MODE" = test ]; then
    stage "arm64 lkvm"
    single "lkvm-arm64-build" make -s -j"$JOBS" BUILD="$BUILD" lkvm
    single "install_test" env BUILD="$BUILD" tests/install_test.sh

    stage "rig tests (nested arm64 KVM under QEMU TCG)"
    if [ -x guest-images/rig-test.sh ]; then
        log=$(mktemp)
        LKVM_BIN="$PWD/$BUILD/arm64/lkvm" guest-images/rig-test.sh 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        line=$(grep -E '^rig: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
        rm -f "$log"
        p=$(echo "$line" | sed -n 's/^rig: \([0-9]*\) passed.*/\1/p')
        f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
        if [ -z "$p" ]; then count "rig" 0 1
        else
            [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
            count "rig" "$p" "$f"
        fi
    else
        count "rig (guest-images/rig-test.sh missing)" 0 1
    fi
fi

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "make $MODE: ${SECONDS}s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
