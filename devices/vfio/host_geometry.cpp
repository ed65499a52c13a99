#include "devices/vfio/host_geometry.hpp"

#include <algorithm>
#include <bit>
#include <string>

#include "vmm/base/error.hpp"

namespace devices::vfio {
namespace {

// Sorts and merges overlapping or touching ranges.
std::vector<IovaRange> merged(std::vector<IovaRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const IovaRange& a, const IovaRange& b) { return a.first < b.first; });
    std::vector<IovaRange> out;
    for (const IovaRange& r : ranges) {
        if (!out.empty() && (out.back().last == ~std::uint64_t{0} || r.first <= out.back().last + 1)) {
            out.back().last = std::max(out.back().last, r.last);
            continue;
        }
        out.push_back(r);
    }
    return out;
}

}  // namespace

iommu::IovaWindow narrow_geometry(const iommu::IovaWindow& wanted, std::span<const HostIommuInfo* const> hosts,
                                  std::uint64_t max_granule) {
    iommu::IovaWindow g = wanted;
    for (const HostIommuInfo* host : hosts) {
        g.page_size_mask &= host->page_sizes;
        std::uint64_t first = ~std::uint64_t{0}, last = 0;
        for (const IovaRange& r : host->iova_ranges) {
            first = std::min(first, r.first);
            last = std::max(last, r.last);
        }
        if (first <= last) {
            g.input_first = std::max(g.input_first, first);
            g.input_last = std::min(g.input_last, last);
        }
    }
    if (g.page_size_mask == 0)
        throw vmm::SetupError("--viommu vfio: the host IOMMUs of the assigned devices share no page size");
    const std::uint64_t granule = std::uint64_t{1} << std::countr_zero(g.page_size_mask);
    if (granule > max_granule)
        throw vmm::SetupError("--viommu vfio: the host IOMMU's smallest page (" + std::to_string(granule >> 10) +
                              " KiB) is larger than the guest's (" + std::to_string(max_granule >> 10) + " KiB)");
    if (g.input_first > g.input_last)
        throw vmm::SetupError("--viommu vfio: the host IOMMU offers no usable IOVA range");
    return g;
}

std::vector<iommu::ResvRegion> endpoint_reserved_regions(const HostIommuInfo& host,
                                                         std::span<const HostReservedRegion> group_regions,
                                                         std::uint64_t input_first, std::uint64_t input_last,
                                                         std::optional<IovaRange> msi, std::size_t max_regions) {
    // 1. Holes: the input range minus the usable ranges; plus the group's reserved regions.
    std::vector<IovaRange> reserved;
    std::uint64_t cursor = input_first;
    bool done = false;
    for (const IovaRange& usable : merged(host.iova_ranges)) {
        if (done || usable.last < cursor) continue;
        if (usable.first > input_last) break;
        if (usable.first > cursor) reserved.push_back({cursor, std::min(usable.first - 1, input_last)});
        if (usable.last >= input_last) {
            done = true;
            break;
        }
        cursor = usable.last + 1;
    }
    if (!done && cursor <= input_last) reserved.push_back({cursor, input_last});
    for (const HostReservedRegion& r : group_regions) {
        if (r.type == "direct-relaxable") continue;  // may be mapped by the guest (RMRR-style, relaxable)
        if (r.last < input_first || r.first > input_last) continue;
        reserved.push_back({std::max(r.first, input_first), std::min(r.last, input_last)});
    }
    reserved = merged(std::move(reserved));

    // 2. Carve the MSI doorbell out: it is reported as MSI, and regions must not overlap
    // (CONFORMANCE.md D51).
    if (msi) {
        std::vector<IovaRange> carved;
        for (const IovaRange& r : reserved) {
            if (r.last < msi->first || r.first > msi->last) {
                carved.push_back(r);
                continue;
            }
            if (r.first < msi->first) carved.push_back({r.first, msi->first - 1});
            if (r.last > msi->last) carved.push_back({msi->last + 1, r.last});
        }
        reserved = std::move(carved);
    }

    // 3. Too many: merge the two neighbours with the smallest gap, unless the doorbell is in it.
    const std::size_t room = max_regions > (msi ? 1u : 0u) ? max_regions - (msi ? 1 : 0) : 0;
    while (reserved.size() > room && reserved.size() >= 2) {
        std::size_t best = reserved.size();
        std::uint64_t best_gap = ~std::uint64_t{0};
        for (std::size_t i = 0; i + 1 < reserved.size(); ++i) {
            const std::uint64_t gap = reserved[i + 1].first - reserved[i].last;
            const bool has_msi = msi && msi->first > reserved[i].last && msi->last < reserved[i + 1].first;
            if (!has_msi && gap < best_gap) {
                best_gap = gap;
                best = i;
            }
        }
        if (best == reserved.size()) break;
        reserved[best].last = reserved[best + 1].last;
        reserved.erase(reserved.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    }
    if (reserved.size() > room) reserved.resize(room);  // cannot happen with sane limits

    std::vector<iommu::ResvRegion> out;
    for (const IovaRange& r : reserved)
        out.push_back({vmm::Iova{r.first}, vmm::Iova{r.last}, iommu::ResvKind::Reserved});
    if (msi) out.push_back({vmm::Iova{msi->first}, vmm::Iova{msi->last}, iommu::ResvKind::Msi});
    std::sort(out.begin(), out.end(),
              [](const iommu::ResvRegion& a, const iommu::ResvRegion& b) { return a.first < b.first; });
    return out;
}

}  // namespace devices::vfio
