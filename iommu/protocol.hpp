// virtio-iommu wire format (virtio 1.2 section 5.13.6): request parsing from copied-out bytes into
// validated values, and encoding of probe properties and fault reports. The structs themselves
// come from <linux/virtio_iommu.h>; their layout is pinned by static_asserts in protocol.cpp.
#pragma once

#include <linux/virtio_iommu.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>

#include "iommu/iommu.hpp"
#include "iommu/types.hpp"
#include "iommu/uapi/virtio_iommu_tables.h"

namespace iommu::protocol {

inline constexpr std::size_t kHeadSize = sizeof(virtio_iommu_req_head);
inline constexpr std::size_t kTailSize = sizeof(virtio_iommu_req_tail);
inline constexpr std::size_t kResvMemSize = sizeof(virtio_iommu_probe_resv_mem);
// The longest fixed device-readable part (PROBE: head, endpoint, 64 reserved bytes).
inline constexpr std::size_t kMaxReadable = sizeof(virtio_iommu_req_probe);

// Fixed device-readable size of a request type (everything before the tail), 0 if unknown.
// ATTACH_TABLE and INVALIDATE exist only once the driver accepted LKVM_VIOMMU_F_ATTACH_TABLE
// (`tables`); before that they are unknown types like any other (CONFORMANCE.md D9).
constexpr std::size_t readable_size(std::uint8_t type, bool tables = false) {
    switch (type) {
        case LKVM_VIOMMU_T_ATTACH_TABLE: return tables ? sizeof(lkvm_viommu_req_attach_table) - kTailSize : 0;
        case LKVM_VIOMMU_T_INVALIDATE: return tables ? sizeof(lkvm_viommu_req_invalidate) - kTailSize : 0;
        case VIRTIO_IOMMU_T_ATTACH: return sizeof(virtio_iommu_req_attach) - kTailSize;
        case VIRTIO_IOMMU_T_DETACH: return sizeof(virtio_iommu_req_detach) - kTailSize;
        case VIRTIO_IOMMU_T_MAP: return sizeof(virtio_iommu_req_map) - kTailSize;
        case VIRTIO_IOMMU_T_UNMAP: return sizeof(virtio_iommu_req_unmap) - kTailSize;
        case VIRTIO_IOMMU_T_PROBE: return sizeof(virtio_iommu_req_probe);
        default: return 0;
    }
}

struct AttachRequest {
    DomainId domain;
    EndpointId endpoint;
    std::uint32_t flags;
    bool reserved_zero;  // CONFORMANCE.md D15: the device checks it
};
struct DetachRequest {  // reserved is ignored (CONFORMANCE.md D24)
    DomainId domain;
    EndpointId endpoint;
};
struct MapRequest {
    DomainId domain;
    std::uint64_t virt_start, virt_end, phys_start;
    std::uint32_t flags;
};
struct UnmapRequest {  // reserved is ignored (CONFORMANCE.md D36 allows it)
    DomainId domain;
    std::uint64_t virt_start, virt_end;
};
struct ProbeRequest {  // the 64 reserved bytes are ignored (CONFORMANCE.md D41)
    EndpointId endpoint;
};
// ATTACH_TABLE (iommu/page_tables.md): `fields` is S_OK or the status its field table gives.
struct AttachTableRequest {
    DomainId domain;
    EndpointId endpoint;
    Status fields;
    TableDescriptor table;  // valid when fields is S_OK
};
// INVALIDATE (iommu/page_tables.md): `fields` likewise.
struct InvalidateRequest {
    DomainId domain;
    Status fields;
    Invalidation what;  // valid when fields is S_OK
};
// An unknown type, or no head: the buffer goes back unwritten (CONFORMANCE.md D9, D12).
struct Unparsable {};
// A known type whose readable part is shorter than its fixed size: answered with S_INVAL.
struct TooShort {
    std::uint8_t type;
};

using Request = std::variant<Unparsable, TooShort, AttachRequest, DetachRequest, MapRequest, UnmapRequest, ProbeRequest,
                             AttachTableRequest, InvalidateRequest>;

// A copy of the first kMaxReadable bytes of the device-readable part, zero-padded.
using ReadableBytes = std::array<std::uint8_t, kMaxReadable>;

// `readable_total` is the length of the whole readable part (how much of `readable` the guest
// actually provided). head.reserved is ignored (CONFORMANCE.md D10). `tables`: the driver accepted
// LKVM_VIOMMU_F_ATTACH_TABLE, so ATTACH_TABLE and INVALIDATE are known types.
Request parse_request(const ReadableBytes& readable, std::uint64_t readable_total, bool tables = false);

// What a TABLE_FORMAT PROBE property announces (iommu/page_tables.md, "Negotiation").
struct TableFormat {
    std::uint8_t output_bits = 48;
    bool shadow = false;  // LKVM_VIOMMU_TABLE_F_SHADOW (page_tables.md, "Shadowed endpoints")
};
inline constexpr std::size_t kTableFormatSize = sizeof(lkvm_viommu_probe_table_format);

// Fills `area` (the PROBE properties area, probe_size bytes) with one RESV_MEM property per region,
// then the TABLE_FORMAT property if `table` is given, and zeroes the rest (CONFORMANCE.md D44-D49).
// false (area zeroed) if they do not fit.
bool encode_probe_properties(std::span<const ResvRegion> regions, std::span<std::uint8_t> area,
                             const std::optional<TableFormat>& table = std::nullopt);

virtio_iommu_fault encode_fault(const Fault& fault);

inline virtio_iommu_req_tail make_tail(Status status) {
    // CONFORMANCE.md D10: tail.reserved written as zero.
    return virtio_iommu_req_tail{static_cast<std::uint8_t>(status), {0, 0, 0}};
}

}  // namespace iommu::protocol
