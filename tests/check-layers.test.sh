#!/bin/bash
# tests/check-layers.test.sh: tests/check-layers.sh passes on this tree and fails on a copy of it
# with one upward include planted, for each layer boundary. Prints PASS/FAIL per case and
# "N passed, N failed"; exits non-zero if any case failed.
set -uo pipefail
cd "$(dirname "$0")/.."
check=tests/check-layers.sh
passed=0
failed=0
result() {  # result NAME OK(0|1)
    if [ "$2" = 0 ]; then echo "PASS $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}

"$check" >/dev/null
result "the tree passes" $?

copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -co --exclude-standard | grep -E '^(vmm|fdt|virtio|iommu|devices)/' | tar cf - -T - | tar xf - -C "$copy"
"$check" "$copy" >/dev/null
result "an unchanged copy passes" $?

# plant NAME FILE INCLUDED: the copy with FILE including INCLUDED must fail, naming FILE.
plant() {
    local name=$1 file=$2 included=$3 out
    cp "$copy/$file" "$copy/$file.orig"
    printf '#include "%s"\n' "$included" >>"$copy/$file"
    out=$("$check" "$copy" 2>&1)
    local rc=$?
    mv "$copy/$file.orig" "$copy/$file"
    [ "$rc" -ne 0 ] && grep -q "^$file:[0-9]*: includes $included" <<<"$out"
    result "fails on $name" $?
}
# accept NAME FILE INCLUDED: the copy with FILE including INCLUDED must still pass.
accept() {
    local name=$1 file=$2 included=$3
    cp "$copy/$file" "$copy/$file.orig"
    printf '#include "%s"\n' "$included" >>"$copy/$file"
    "$check" "$copy" >/dev/null 2>&1
    local rc=$?
    mv "$copy/$file.orig" "$copy/$file"
    result "accepts $name" $rc
}
plant "the ground including the roof" vmm/base/bus.hpp vmm/config.hpp
plant "the ground including a device" vmm/base/dma_memory.cpp devices/pci/config_space.hpp
plant "fdt including virtio" fdt/writer.cpp virtio/queue.hpp
plant "virtio including iommu" virtio/queue.cpp iommu/iommu.hpp
plant "virtio including a device backend" virtio/p9.hpp devices/p9/file_server.hpp
plant "iommu including devices" iommu/domain.cpp devices/vfio/dma_mapper.hpp
plant "a device backend including the CLI's types" devices/net/tap_backend.hpp vmm/net_config.hpp
accept "the roof including a device" vmm/config.cpp devices/p9/file_server.hpp
accept "a device including the ground" devices/uart_16550.cpp vmm/base/log.hpp

echo "check-layers.test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
