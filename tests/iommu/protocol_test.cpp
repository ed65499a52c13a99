// virtio-iommu wire parsing and encoding (virtio 1.2 5.13.6, 5.13.6.9) on raw bytes.
#include "iommu/protocol.hpp"

#include <doctest/doctest.h>

#include <cstring>

#include "tests/iommu/viommu_harness.hpp"

using namespace iommu::protocol;
using iommu::ResvKind;

namespace {

// The device's zero-padded copy of the first readable bytes.
Request parse(const std::vector<std::uint8_t>& bytes, std::uint64_t total) {
    ReadableBytes copy{};
    std::memcpy(copy.data(), bytes.data(), std::min<std::size_t>(bytes.size(), copy.size()));
    return parse_request(copy, total);
}

}  // namespace

TEST_CASE("parse_request decodes each request type from its little-endian wire bytes") {
    auto map = viommu_test::map_req(7, 0x1000, 0x1fff, 0x4000'0000, 3);
    auto request = parse(map, map.size());
    REQUIRE(std::holds_alternative<MapRequest>(request));
    const auto& m = std::get<MapRequest>(request);
    CHECK(m.domain == 7);
    CHECK(m.virt_start == 0x1000);
    CHECK(m.virt_end == 0x1fff);
    CHECK(m.phys_start == 0x4000'0000);
    CHECK(m.flags == 3);
    auto attach = viommu_test::attach_req(1, 2, 1, 9);
    const auto a = std::get<AttachRequest>(parse(attach, attach.size()));
    CHECK((a.domain == 1 && a.endpoint == 2 && a.flags == 1 && !a.reserved_zero));
    auto probe = viommu_test::probe_req(0xabcd, 0xff);
    CHECK(std::get<ProbeRequest>(parse(probe, probe.size())).endpoint == 0xabcd);
    auto unmap = viommu_test::unmap_req(3, 5, 9, 1);
    const auto u = std::get<UnmapRequest>(parse(unmap, unmap.size()));
    CHECK((u.domain == 3 && u.virt_start == 5 && u.virt_end == 9));
    auto detach = viommu_test::detach_req(4, 6, 1);
    const auto d = std::get<DetachRequest>(parse(detach, detach.size()));
    CHECK((d.domain == 4 && d.endpoint == 6));
}

TEST_CASE("parse_request: no head or an unknown type is unparsable; a short body is TooShort") {
    const std::vector<std::uint8_t> three{1, 0, 0};
    CHECK(std::holds_alternative<Unparsable>(parse(three, 3)));
    auto unknown = viommu_test::attach_req(1, 1);
    unknown[0] = 9;
    CHECK(std::holds_alternative<Unparsable>(parse(unknown, unknown.size())));
    auto map = viommu_test::map_req(1, 0, 1, 0, 0);
    CHECK(std::holds_alternative<TooShort>(parse({map.begin(), map.begin() + 35}, 35)));
    // The copy holds more, but the chain's readable part was shorter: too short.
    CHECK(std::holds_alternative<TooShort>(parse(map, 20)));
    CHECK(readable_size(0) == 0);
    CHECK(readable_size(VIRTIO_IOMMU_T_PROBE) == kMaxReadable);
}

TEST_CASE("encode_probe_properties writes 24-byte RESV_MEM properties and zeroes the rest") {
    std::vector<std::uint8_t> area(100, 0xAA);
    const std::vector<iommu::ResvRegion> regions{{vmm::Iova{0x10}, vmm::Iova{0x1f}, ResvKind::Msi},
                                                 {vmm::Iova{0x100}, vmm::Iova{0x1ff}, ResvKind::Reserved}};
    REQUIRE(encode_probe_properties(regions, area));
    virtio_iommu_probe_resv_mem first, second;
    std::memcpy(&first, &area[0], 24);
    std::memcpy(&second, &area[24], 24);
    CHECK((first.head.type == 1 && first.head.length == 20 && first.subtype == 1));
    CHECK((first.start == 0x10 && first.end == 0x1f));
    CHECK((second.subtype == 0 && second.start == 0x100 && second.end == 0x1ff));
    CHECK(std::vector<std::uint8_t>(area.begin() + 48, area.end()) == std::vector<std::uint8_t>(52, 0));
    // Too many for the area: nothing but zeroes.
    std::vector<std::uint8_t> small(47, 0xAA);
    CHECK_FALSE(encode_probe_properties(regions, small));
    CHECK(small == std::vector<std::uint8_t>(47, 0));
}

TEST_CASE("encode_fault lays out a 24-byte report with only defined bits set") {
    const auto wire = encode_fault({5, iommu::FaultReason::Mapping, iommu::Access::Write, 0x1234'5678'9abc, {}});
    std::uint8_t bytes[24];
    std::memcpy(bytes, &wire, 24);
    CHECK(bytes[0] == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK((bytes[1] | bytes[2] | bytes[3] | bytes[12] | bytes[13] | bytes[14] | bytes[15]) == 0);
    CHECK(wire.flags == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(wire.endpoint == 5);
    CHECK(wire.address == 0x1234'5678'9abc);
    // A refused MAP reports the mapping's permissions.
    const auto refused =
        encode_fault({5, iommu::FaultReason::Mapping, iommu::Access::Read, 0x1000, iommu::kMapRead | iommu::kMapWrite});
    CHECK(refused.flags == (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    const auto tail = make_tail(iommu::Status::Range);
    CHECK((tail.status == 5 && tail.reserved[0] == 0 && tail.reserved[1] == 0 && tail.reserved[2] == 0));
}
