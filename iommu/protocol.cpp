// virtio-iommu request parsing and response encoding (virtio 1.2 5.13.6, 5.13.6.9).
#include "iommu/protocol.hpp"

#include <endian.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace iommu::protocol {

// Layouts of virtio 1.2 section 5.13.6, pinned against <linux/virtio_iommu.h>.
static_assert(sizeof(virtio_iommu_config) == 40 && offsetof(virtio_iommu_config, bypass) == 36);
static_assert(offsetof(virtio_iommu_config, probe_size) == 32);
static_assert(sizeof(virtio_iommu_req_head) == 4 && sizeof(virtio_iommu_req_tail) == 4);
static_assert(sizeof(virtio_iommu_req_attach) == 24 && offsetof(virtio_iommu_req_attach, tail) == 20);
static_assert(sizeof(virtio_iommu_req_detach) == 24 && offsetof(virtio_iommu_req_detach, tail) == 20);
static_assert(sizeof(virtio_iommu_req_map) == 40 && offsetof(virtio_iommu_req_map, virt_start) == 8 &&
              offsetof(virtio_iommu_req_map, tail) == 36);
static_assert(sizeof(virtio_iommu_req_unmap) == 32 && offsetof(virtio_iommu_req_unmap, tail) == 28);
static_assert(sizeof(virtio_iommu_req_probe) == 72);
static_assert(sizeof(virtio_iommu_probe_property) == 4 && sizeof(virtio_iommu_probe_resv_mem) == 24);
static_assert(sizeof(virtio_iommu_fault) == 24 && offsetof(virtio_iommu_fault, address) == 16);
static_assert(readable_size(VIRTIO_IOMMU_T_ATTACH) == 20 && readable_size(VIRTIO_IOMMU_T_DETACH) == 20 &&
              readable_size(VIRTIO_IOMMU_T_MAP) == 36 && readable_size(VIRTIO_IOMMU_T_UNMAP) == 28 &&
              readable_size(VIRTIO_IOMMU_T_PROBE) == 72);

namespace {

// The wire struct from the (zero-padded) readable copy; fixed sizes, so the copy is inlined.
template <class Wire>
Wire copy_in(const ReadableBytes& readable) {
    static_assert(sizeof(Wire) <= kMaxReadable);
    Wire wire;
    std::memcpy(&wire, readable.data(), sizeof wire);
    return wire;
}

}  // namespace

Request parse_request(const ReadableBytes& readable, std::uint64_t readable_total) {
    if (readable_total < kHeadSize) return Unparsable{};
    const std::uint8_t type = readable[0];
    const std::size_t needed = readable_size(type);
    if (needed == 0) return Unparsable{};
    if (readable_total < needed) return TooShort{type};

    switch (type) {
        case VIRTIO_IOMMU_T_ATTACH: {
            const auto wire = copy_in<virtio_iommu_req_attach>(readable);
            bool zero = true;
            for (std::uint8_t byte : wire.reserved) zero = zero && byte == 0;
            return AttachRequest{le32toh(wire.domain), le32toh(wire.endpoint), le32toh(wire.flags), zero};
        }
        case VIRTIO_IOMMU_T_DETACH: {
            const auto wire = copy_in<virtio_iommu_req_detach>(readable);
            return DetachRequest{le32toh(wire.domain), le32toh(wire.endpoint)};
        }
        case VIRTIO_IOMMU_T_MAP: {
            const auto wire = copy_in<virtio_iommu_req_map>(readable);
            return MapRequest{le32toh(wire.domain), le64toh(wire.virt_start), le64toh(wire.virt_end),
                              le64toh(wire.phys_start), le32toh(wire.flags)};
        }
        case VIRTIO_IOMMU_T_UNMAP: {
            const auto wire = copy_in<virtio_iommu_req_unmap>(readable);
            return UnmapRequest{le32toh(wire.domain), le64toh(wire.virt_start), le64toh(wire.virt_end)};
        }
        default: {  // VIRTIO_IOMMU_T_PROBE
            const auto wire = copy_in<virtio_iommu_req_probe>(readable);
            return ProbeRequest{le32toh(wire.endpoint)};
        }
    }
}

bool encode_probe_properties(std::span<const ResvRegion> regions, std::span<std::uint8_t> area) {
    std::memset(area.data(), 0, area.size());  // CONFORMANCE.md D48; a zero header is the NONE terminator
    if (regions.size() > area.size() / kResvMemSize) return false;  // CONFORMANCE.md D47: then write no property
    std::size_t offset = 0;
    for (const ResvRegion& region : regions) {
        virtio_iommu_probe_resv_mem property;
        std::memset(&property, 0, sizeof property);  // CONFORMANCE.md D44 (type bits 12-15) and D49 reserved
        property.head.type = htole16(VIRTIO_IOMMU_PROBE_T_RESV_MEM);
        property.head.length = htole16(kResvMemSize - sizeof(virtio_iommu_probe_property));  // CONFORMANCE.md D45
        property.subtype = static_cast<std::uint8_t>(region.kind);
        property.start = htole64(region.first.value);
        property.end = htole64(region.last.value);
        std::memcpy(area.data() + offset, &property, sizeof property);
        offset += sizeof property;  // CONFORMANCE.md D46: the next property starts length + 4 bytes later
    }
    return true;
}

virtio_iommu_fault encode_fault(const Fault& fault) {
    virtio_iommu_fault wire;
    std::memset(&wire, 0, sizeof wire);  // CONFORMANCE.md D54: reserved and reserved1 zero
    wire.reason = static_cast<std::uint8_t>(fault.reason);
    // CONFORMANCE.md D55: only defined flags. The address is always known here (D57 allows omitting
    // it).
    std::uint32_t flags = VIRTIO_IOMMU_FAULT_F_ADDRESS;
    if (fault.map_flags) {
        flags |= (*fault.map_flags & kMapRead) ? VIRTIO_IOMMU_FAULT_F_READ : 0u;
        flags |= (*fault.map_flags & kMapWrite) ? VIRTIO_IOMMU_FAULT_F_WRITE : 0u;
    } else {
        flags |= fault.access == Access::Write ? VIRTIO_IOMMU_FAULT_F_WRITE : VIRTIO_IOMMU_FAULT_F_READ;
    }
    wire.flags = htole32(flags);
    wire.endpoint = htole32(fault.endpoint);  // CONFORMANCE.md D56
    wire.address = htole64(fault.address);
    return wire;
}

}  // namespace iommu::protocol
