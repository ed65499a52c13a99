#include "devices/vfio/bar_plan.hpp"

#include <algorithm>

namespace devices::vfio {

std::vector<BarPiece> plan_bar(std::uint64_t bar_size, std::uint64_t page_size, std::span<const SparseArea> mappable,
                               std::span<const IovaRange> traps) {
    std::vector<BarPiece> pieces;
    if (bar_size == 0) return pieces;
    const std::uint64_t page_mask = page_size - 1;
    // Direct candidates: mappable areas shrunk to whole pages inside the BAR.
    std::vector<IovaRange> direct;  // [first, last] offsets
    if (bar_size >= page_size) {
        for (const SparseArea& area : mappable) {
            if (area.size == 0 || area.offset >= bar_size) continue;
            const std::uint64_t end = std::min(bar_size, area.offset + std::min(area.size, bar_size - area.offset));
            const std::uint64_t first = (area.offset + page_mask) & ~page_mask;
            const std::uint64_t stop = end & ~page_mask;
            if (first < stop) direct.push_back({first, stop - 1});
        }
    }
    // Minus the trapped pages.
    for (const IovaRange& trap : traps) {
        if (trap.first >= bar_size) continue;
        const std::uint64_t first = trap.first & ~page_mask;
        const std::uint64_t last = std::min(bar_size - 1, trap.last | page_mask);
        std::vector<IovaRange> left;
        for (const IovaRange& d : direct) {
            if (d.last < first || d.first > last) {
                left.push_back(d);
                continue;
            }
            if (d.first < first) left.push_back({d.first, first - 1});
            if (d.last > last) left.push_back({last + 1, d.last});
        }
        direct = std::move(left);
    }
    std::sort(direct.begin(), direct.end(), [](const IovaRange& a, const IovaRange& b) { return a.first < b.first; });
    // Fill the gaps with trapped pieces, merging neighbours of one kind.
    auto push = [&](std::uint64_t offset, std::uint64_t size, bool is_direct) {
        if (size == 0) return;
        if (!pieces.empty() && pieces.back().direct == is_direct && pieces.back().offset + pieces.back().size == offset)
            pieces.back().size += size;
        else pieces.push_back({offset, size, is_direct});
    };
    std::uint64_t cursor = 0;
    for (const IovaRange& d : direct) {
        if (d.first < cursor) continue;  // overlapping sparse areas: keep the first
        push(cursor, d.first - cursor, false);
        push(d.first, d.last - d.first + 1, true);
        cursor = d.last + 1;
    }
    push(cursor, bar_size - cursor, false);
    return pieces;
}

}  // namespace devices::vfio
