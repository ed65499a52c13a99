#!/bin/bash
# tests/check-layers.sh [ROOT]: every #include "..." between the project's folders points down the
# layers README.md draws (section "How it is built"), bottom to top:
#
#   vmm/base/  the ground: includes nothing else of the tree
#   fdt/       device-tree writer
#   virtio/    virtqueues, transport, device models over their backend seams
#   iommu/     the IOMMU model and the virtio-iommu device
#   devices/   device backends and platform devices
#   vmm/       the roof (everything in vmm/ outside vmm/base/): may include anything below
#
# A file may include its own layer and any layer below it. tests/ stand outside the rule. An
# include the rule forbids fails the check (file:line, both layers), unless ALLOWED names it
# with the reason it is kept for now. ROOT defaults to the repository this script is in.
set -euo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

# "FILE -> INCLUDED  reason", one per line: upward includes kept on purpose. Empty: none.
ALLOWED=''

layer_of() {  # layer_of PATH: its rank (0 = ground), or nothing when outside the rule
    case $1 in
        vmm/base/*) echo 0 ;;
        fdt/*) echo 1 ;;
        virtio/*) echo 2 ;;
        iommu/*) echo 3 ;;
        devices/*) echo 4 ;;
        vmm/*) echo 5 ;;
    esac
}
names=(vmm/base fdt virtio iommu devices vmm)

problems=0
while IFS= read -r file; do
    from=$(layer_of "$file")
    [ -n "$from" ] || continue
    while IFS=: read -r n included; do
        to=$(layer_of "$included")
        [ -n "$to" ] || continue
        [ "$to" -le "$from" ] && continue
        grep -qxF "$file -> $included" <<<"$(sed 's/  .*//' <<<"$ALLOWED")" && continue
        echo "$file:$n: includes $included: ${names[$from]}/ may include only its own layer and those below (${names[$to]}/ is above it)"
        problems=$((problems + 1))
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" | sed 's/^\([0-9]*\):.*"\([^"]*\)".*/\1:\2/')
done < <(find vmm fdt virtio iommu devices -type f \( -name '*.cpp' -o -name '*.hpp' \) 2>/dev/null | sort)

if [ "$problems" -gt 0 ]; then
    echo "check-layers: $problems include(s) point up the layers (see tests/check-layers.sh and README.md)"
    exit 1
fi
echo "check-layers: every include points down the layers"
