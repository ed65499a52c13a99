// What the host IOMMU behind the assigned functions lets the virtio-iommu promise (from
// VFIO_IOMMU_GET_INFO, include/uapi/linux/vfio.h): the page sizes and input range every container
// supports, and per endpoint the RESV_MEM regions PROBE reports: the ITS doorbell frame as MSI and
// the host's IOVA holes as RESERVED (as QEMU 10 reports them for the rig's SMMUv3 host).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/vfio/container.hpp"
#include "devices/vfio/group.hpp"
#include "iommu/types.hpp"

namespace devices::vfio {

// `wanted` narrowed to what every host container supports: page sizes intersected, input
// range clipped to the span of the usable IOVA ranges. Throws vmm::SetupError when nothing is
// left (no common page size, or a granule larger than `max_granule`, the guest page size).
iommu::IovaWindow narrow_geometry(const iommu::IovaWindow& wanted, std::span<const HostIommuInfo* const> hosts,
                                  std::uint64_t max_granule);

// The endpoint's RESV_MEM regions, sorted, non-overlapping, at most `max_regions`: `msi` (if
// given) as an MSI region; inside [input_first, input_last] every IOVA the host cannot translate
// (outside `host.iova_ranges`, or in the group's reserved_regions) as RESERVED. When there are
// too many holes, the closest ones are merged (reserving more is always safe).
std::vector<iommu::ResvRegion> endpoint_reserved_regions(const HostIommuInfo& host,
                                                         std::span<const HostReservedRegion> group_regions,
                                                         std::uint64_t input_first, std::uint64_t input_last,
                                                         std::optional<IovaRange> msi, std::size_t max_regions);

}  // namespace devices::vfio
