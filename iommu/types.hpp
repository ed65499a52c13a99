// Vocabulary shared by the IOMMU model, its listeners (VFIO) and the virtio-iommu front end:
// identifiers, request status codes, mappings and reserved regions (virtio 1.2 section 5.13.6).
// Leaf header: depends on nothing internal but vmm/base/address.hpp.
#pragma once

#include <linux/virtio_iommu.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "vmm/base/address.hpp"

namespace iommu {

using EndpointId = std::uint32_t;
using DomainId = std::uint32_t;

// Request status, as written into virtio_iommu_req_tail.status (virtio 1.2 5.13.6).
enum class Status : std::uint8_t {
    Ok = VIRTIO_IOMMU_S_OK,
    IoErr = VIRTIO_IOMMU_S_IOERR,
    Unsupp = VIRTIO_IOMMU_S_UNSUPP,
    DevErr = VIRTIO_IOMMU_S_DEVERR,
    Inval = VIRTIO_IOMMU_S_INVAL,
    Range = VIRTIO_IOMMU_S_RANGE,
    NoEnt = VIRTIO_IOMMU_S_NOENT,
    Fault = VIRTIO_IOMMU_S_FAULT,
    NoMem = VIRTIO_IOMMU_S_NOMEM,
};
inline constexpr std::size_t kStatusCount = VIRTIO_IOMMU_S_NOMEM + 1;
using StatusCounts = std::array<std::uint64_t, kStatusCount>;

constexpr const char* status_name(Status status) {
    constexpr std::array<const char*, kStatusCount> kNames{"OK",    "IOERR", "UNSUPP", "DEVERR", "INVAL",
                                                           "RANGE", "NOENT", "FAULT",  "NOMEM"};
    const auto index = static_cast<std::size_t>(status);
    return index < kNames.size() ? kNames[index] : "?";
}

// MAP flags as on the wire (VIRTIO_IOMMU_MAP_F_READ | _WRITE | _MMIO).
inline constexpr std::uint32_t kMapRead = VIRTIO_IOMMU_MAP_F_READ;
inline constexpr std::uint32_t kMapWrite = VIRTIO_IOMMU_MAP_F_WRITE;
inline constexpr std::uint32_t kMapMmio = VIRTIO_IOMMU_MAP_F_MMIO;

// One mapping, as created by one MAP request: [first, last] -> [gpa, gpa + (last - first)].
// Bounds are inclusive, so the full 64-bit space is representable (the size 2^64 is not).
struct Mapping {
    vmm::Iova first;
    vmm::Iova last;
    vmm::GuestPhysAddr gpa;
    std::uint32_t flags = 0;

    friend bool operator==(const Mapping&, const Mapping&) = default;
};

// A RESV_MEM probe property (virtio 1.2 5.13.6.8.1): IOVAs the driver must not map.
enum class ResvKind : std::uint8_t {
    Reserved = VIRTIO_IOMMU_RESV_MEM_T_RESERVED,  // never usable (e.g. host IOVA holes)
    Msi = VIRTIO_IOMMU_RESV_MEM_T_MSI,            // MSI doorbell, reaches the irqchip untranslated
};

struct ResvRegion {
    vmm::Iova first;
    vmm::Iova last;  // inclusive
    ResvKind kind = ResvKind::Reserved;

    bool overlaps(std::uint64_t first_iova, std::uint64_t last_iova) const {
        return first.value <= last_iova && first_iova <= last.value;
    }
    friend bool operator==(const ResvRegion&, const ResvRegion&) = default;
};

// Fault reasons of virtio_iommu_fault.reason (virtio 1.2 5.13.6.9).
enum class FaultReason : std::uint8_t {
    Unknown = VIRTIO_IOMMU_FAULT_R_UNKNOWN,
    Domain = VIRTIO_IOMMU_FAULT_R_DOMAIN,    // endpoint not attached (and not in bypass)
    Mapping = VIRTIO_IOMMU_FAULT_R_MAPPING,  // no mapping, or the mapping forbids the access
};

}  // namespace iommu
