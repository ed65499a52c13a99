#!/bin/bash
# tests/check-format.sh [--fix]: the project's C++ sources (every .cpp/.hpp under vmm, devices,
# virtio, iommu, fdt and tests; not the fuzz corpora, not build outputs) are formatted as
# .clang-format says. Without --fix: clang-format --dry-run --Werror, one line per file that
# would change and a count; fails if any would. With --fix (`make format`): formats them in place.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null ||
    { echo "check-format: clang-format is not installed (apt-get install clang-format)" >&2; exit 1; }
mapfile -t sources < <(find vmm devices virtio iommu fdt tests -path tests/fuzz/corpus -prune -o \
    -type f \( -name '*.cpp' -o -name '*.hpp' \) -print | sort)
if [ "${1:-}" = --fix ]; then
    clang-format -i "${sources[@]}"
    echo "check-format: formatted ${#sources[@]} files"
    exit 0
fi
# Each finding is "FILE:LINE:COL: error: code should be clang-formatted"; one line per file.
mapfile -t unformatted < <(clang-format --dry-run --Werror "${sources[@]}" 2>&1 |
    sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' | uniq -c)
if [ "${#unformatted[@]}" -gt 0 ]; then
    printf '%s\n' "${unformatted[@]}" | awk '{ print "check-format: " $2 ": " $1 " place(s) differ from .clang-format" }'
    echo "check-format: ${#unformatted[@]} of ${#sources[@]} files are not formatted; run make format"
    exit 1
fi
echo "check-format: all ${#sources[@]} files match .clang-format"
