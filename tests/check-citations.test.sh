#!/bin/bash
# tests/check-citations.test.sh: tests/check-citations.sh passes on this tree and fails on a copy of
# it with one bogus citation planted, for each kind it catches. Prints PASS/FAIL per case and
# "N passed, N failed"; exits non-zero if any case failed.
set -uo pipefail
cd "$(dirname "$0")/.."
check=tests/check-citations.sh
passed=0
failed=0
result() {  # result NAME OK(0|1)
    if [ "$2" = 0 ]; then echo "PASS $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}

"$check" >/dev/null
result "the tree passes" $?

copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -co --exclude-standard | grep -vE '^(tests/fuzz/corpus/|build/|guest-images/out/)' |
    tar cf - -T - 2>/dev/null | tar xf - -C "$copy"
"$check" "$copy" >/dev/null
result "an unchanged copy passes" $?

# plant NAME FILE LINE: the copy with LINE appended to FILE must fail, naming FILE.
plant() {
    local name=$1 file=$2 line=$3 out
    cp "$copy/$file" "$copy/$file.orig"
    printf '%s\n' "$line" >>"$copy/$file"
    out=$("$check" "$copy" 2>&1)
    local rc=$?
    mv "$copy/$file.orig" "$copy/$file"
    [ "$rc" -ne 0 ] && grep -q "^$file:" <<<"$out"
    result "fails on $name" $?
}
plant "a reference section in a C++ comment" virtio/queue.cpp '// Bounded as reference 1.5 says.'
plant "a reference section, spelled out" iommu/map_listener.hpp '// As reference section 4.2 says.'
plant "a reference section on the next line" devices/vfio/host_geometry.hpp $'// as the reference\n// 4.2 says'
plant "a reference appendix" iommu/protocol.cpp "// Layouts from the reference's Appendix A."
plant "an architecture section" iommu/domain.hpp '// See architecture 6.7.5.'
plant "rig.md" tests/rig/lib.sh '# as measured in rig.md section 7'
plant "../shared" README.md 'Details: ../shared/docs/notes.md'
plant "an undefined D ID" iommu/iommu.cpp '// CONFORMANCE.md D99: made up.'
plant "an undefined bare ID" virtio/blk.cpp '// (G42)'
plant "an undefined driver-rule ID" vmm/base/log.hpp '// R16: virt_end > virt_start.'
plant "an undefined L ID after CONFORMANCE.md" fdt/writer.cpp '// CONFORMANCE.md L15'
plant "an undefined ID in a range" tests/virtio/queue_test.cpp '// CONFORMANCE.md D58, D960-D962'
plant "an undefined ID in a test name" tests/virtio/queue_test.cpp 'TEST_CASE("D977 nothing") {}'
plant "an issue number" vmm/base/layout.hpp '// Reserved (issue 6).'
plant "an issue number with a hash" tests/rig/lib.sh '# the fix for Issue #14'
plant "an issue number in a README" guest-images/README.md 'Measured for issue 10.'
plant "an issue number in a test name" tests/virtio/queue_test.cpp 'TEST_CASE("issue 3: ring wraps") {}'
plant "a path of ours that does not exist" devices/uart_16550.hpp '// Like vmm/nowhere.hpp does.'

echo "check-citations.test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
