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

// Page-table handover layouts (iommu/uapi/virtio_iommu_tables.h): the sizes our guest driver
// was built against.
static_assert(sizeof(lkvm_viommu_req_attach_table) == 72 && offsetof(lkvm_viommu_req_attach_table, tcr) == 16 &&
              offsetof(lkvm_viommu_req_attach_table, tail) == 68);
static_assert(sizeof(lkvm_viommu_req_invalidate) == 64 && offsetof(lkvm_viommu_req_invalidate, asid) == 24 &&
              offsetof(lkvm_viommu_req_invalidate, granule) == 48 && offsetof(lkvm_viommu_req_invalidate, tail) == 60);
static_assert(sizeof(lkvm_viommu_probe_table_format) == 32 &&
              offsetof(lkvm_viommu_probe_table_format, pgsize_bitmap) == 16);
static_assert(readable_size(LKVM_VIOMMU_T_ATTACH_TABLE) == 0 && readable_size(LKVM_VIOMMU_T_ATTACH_TABLE, true) == 68 &&
              readable_size(LKVM_VIOMMU_T_INVALIDATE, true) == 60);

namespace {

// The wire struct from the (zero-padded) readable copy; fixed sizes, so the copy is inlined.
template <class Wire>
Wire copy_in(const ReadableBytes& readable) {
    static_assert(sizeof(Wire) <= kMaxReadable);
    Wire wire;
    std::memcpy(&wire, readable.data(), sizeof wire);
    return wire;
}

// ATTACH_TABLE's field table (page_tables.md, "ATTACH_TABLE fields"); reserved bytes are ignored.
AttachTableRequest parse_attach_table(const lkvm_viommu_req_attach_table& wire) {
    AttachTableRequest request{le32toh(wire.domain), le32toh(wire.endpoint), Status::Inval, {}};
    TableDescriptor& table = request.table;
    table.format = le16toh(wire.format);
    table.asid = le16toh(wire.asid);  // 16 bits on the wire: always below 2^16
    table.tcr = le64toh(wire.tcr);
    table.ttbr = le64toh(wire.ttbr);
    table.mair = le64toh(wire.mair);
    if (table.format != LKVM_VIOMMU_FMT_ARM_LPAE_S1) return request;
    const std::optional<Stage1Config> stage1 = decode_stage1(table.tcr, table.ttbr);
    if (!stage1) return request;
    table.stage1 = *stage1;
    request.fields = Status::Ok;
    return request;
}

// INVALIDATE's field table (page_tables.md, "INVALIDATE"), checked in its order.
InvalidateRequest parse_invalidate(const lkvm_viommu_req_invalidate& wire) {
    InvalidateRequest request{le32toh(wire.domain), Status::Inval, {}};
    const std::uint16_t scope = le16toh(wire.scope), caches = le16toh(wire.caches), flags = le16toh(wire.flags);
    const std::uint64_t asid = le64toh(wire.asid), start = le64toh(wire.virt_start), pages = le64toh(wire.nr_pages);
    auto answer = [&](Status status) {
        request.fields = status;
        return request;
    };
    Invalidation& what = request.what;
    switch (scope) {
        case LKVM_VIOMMU_INV_DOMAIN: what.scope = InvalidateScope::Domain; break;
        case LKVM_VIOMMU_INV_ASID: what.scope = InvalidateScope::Asid; break;
        case LKVM_VIOMMU_INV_RANGE: what.scope = InvalidateScope::Range; break;
        default: return answer(Status::Inval);  // none, several, or an unknown bit
    }
    if (caches & ~LKVM_VIOMMU_INV_CACHE_IOTLB) return answer(Status::Unsupp);
    if (!(caches & LKVM_VIOMMU_INV_CACHE_IOTLB)) return answer(Status::Inval);
    if (flags & LKVM_VIOMMU_INV_F_PASID) return answer(Status::Unsupp);
    if (flags & ~(LKVM_VIOMMU_INV_F_ASID | LKVM_VIOMMU_INV_F_LEAF)) return answer(Status::Inval);
    if (le32toh(wire.pasid) != 0) return answer(Status::Inval);
    if (flags & LKVM_VIOMMU_INV_F_ASID) {
        if (asid > 0xffff) return answer(Status::Inval);
        what.asid = static_cast<std::uint16_t>(asid);
    } else if (what.scope == InvalidateScope::Asid) {
        return answer(Status::Inval);
    }
    if (what.scope == InvalidateScope::Range) {
        const unsigned granule = wire.granule;
        if (granule < 12 || granule > 48 || pages == 0 || !vmm::is_aligned(start, std::uint64_t{1} << granule))
            return answer(Status::Inval);
        // The range must fit below 2^64: at most 2^(64 - granule) pages, and no wrap past the top.
        if (pages > (std::uint64_t{1} << (64 - granule))) return answer(Status::Inval);
        const auto last = vmm::checked_add(start, (pages << granule) - 1);  // 2^64 pages << granule is 0
        if (!last) return answer(Status::Inval);
        what.first = start;
        what.last = *last;
    }
    return answer(Status::Ok);
}

}  // namespace

Request parse_request(const ReadableBytes& readable, std::uint64_t readable_total, bool tables) {
    if (readable_total < kHeadSize) return Unparsable{};
    const std::uint8_t type = readable[0];
    const std::size_t needed = readable_size(type, tables);
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
        case LKVM_VIOMMU_T_ATTACH_TABLE: return parse_attach_table(copy_in<lkvm_viommu_req_attach_table>(readable));
        case LKVM_VIOMMU_T_INVALIDATE: return parse_invalidate(copy_in<lkvm_viommu_req_invalidate>(readable));
        default: {  // VIRTIO_IOMMU_T_PROBE
            const auto wire = copy_in<virtio_iommu_req_probe>(readable);
            return ProbeRequest{le32toh(wire.endpoint)};
        }
    }
}

bool encode_probe_properties(std::span<const ResvRegion> regions, std::span<std::uint8_t> area,
                             const std::optional<TableFormat>& table) {
    std::memset(area.data(), 0, area.size());  // CONFORMANCE.md D48; a zero header is the NONE terminator
    // CONFORMANCE.md D47: what does not fit gets no property at all.
    const std::size_t table_size = table ? kTableFormatSize : 0;
    if (area.size() < table_size || regions.size() > (area.size() - table_size) / kResvMemSize) return false;
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
    if (table) {  // after the RESV_MEM properties (page_tables.md, "Negotiation")
        lkvm_viommu_probe_table_format property;
        std::memset(&property, 0, sizeof property);
        property.head.type = htole16(LKVM_VIOMMU_PROBE_T_TABLE_FORMAT);
        property.head.length = htole16(kTableFormatSize - sizeof(virtio_iommu_probe_property));
        property.format = htole16(LKVM_VIOMMU_FMT_ARM_LPAE_S1);
        property.asid_bits = 16;
        property.input_bits = 64 - tcr::kMinT0sz;
        property.output_bits = table->output_bits;
        property.pgsize_bitmap = htole64(kStage1PageSizes);
        // No hardware access-flag or dirty updates; SHADOW for an endpoint behind a host IOMMU.
        property.flags = htole64(table->shadow ? LKVM_VIOMMU_TABLE_F_SHADOW : 0);
        std::memcpy(area.data() + offset, &property, sizeof property);
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
