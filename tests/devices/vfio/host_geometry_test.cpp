#include "devices/vfio/host_geometry.hpp"

#include <doctest/doctest.h>

#include "vmm/base/error.hpp"

using devices::vfio::HostIommuInfo;
using devices::vfio::IovaRange;
using iommu::ResvKind;

namespace {

constexpr std::uint64_t k48 = (std::uint64_t{1} << 48) - 1;

// The rig's L1 host: SMMUv3 with its software MSI window at 0x8000000-0x80fffff.
HostIommuInfo rig_host() { return {0x40201000, {{0, 0x7ffffff}, {0x8100000, k48}}, 65535}; }

}  // namespace

TEST_CASE("PROBE regions for the rig: the host MSI window reserved around the guest's ITS doorbell frame") {
    const auto groups = devices::vfio::parse_reserved_regions("0x0000000008000000 0x00000000080fffff msi\n");
    auto regions =
        devices::vfio::endpoint_reserved_regions(rig_host(), groups, 0, k48, IovaRange{0x8090000, 0x809ffff}, 16);
    // What QEMU 10 reports for the same host (measured in the rig), minus the part above 48 bits
    // that lkvm excludes through input_range instead.
    REQUIRE(regions.size() == 3);
    CHECK(regions[0] == iommu::ResvRegion{vmm::Iova{0x8000000}, vmm::Iova{0x808ffff}, ResvKind::Reserved});
    CHECK(regions[1] == iommu::ResvRegion{vmm::Iova{0x8090000}, vmm::Iova{0x809ffff}, ResvKind::Msi});
    CHECK(regions[2] == iommu::ResvRegion{vmm::Iova{0x80a0000}, vmm::Iova{0x80fffff}, ResvKind::Reserved});
}

TEST_CASE("Holes above the host's range and group regions are reserved; relaxable ones are not") {
    HostIommuInfo host{0x1000, {{0x1000, 0xffffffff}}, std::nullopt};
    std::vector<devices::vfio::HostReservedRegion> groups{{0xfee00000, 0xfeefffff, "msi"},
                                                          {0x50000000, 0x5fffffff, "direct-relaxable"}};
    auto regions = devices::vfio::endpoint_reserved_regions(host, groups, 0, k48, std::nullopt, 16);
    REQUIRE(regions.size() == 3);
    CHECK(regions[0].first.value == 0);
    CHECK(regions[0].last.value == 0xfff);
    CHECK(regions[1].first.value == 0xfee00000);
    CHECK(regions[2].first.value == 0x100000000);
    CHECK(regions[2].last.value == k48);
}

TEST_CASE("Too many holes are merged, never across the MSI region, to fit the limit") {
    HostIommuInfo host{0x1000, {}, std::nullopt};
    for (std::uint64_t i = 0; i < 40; ++i) host.iova_ranges.push_back({i * 0x10000, i * 0x10000 + 0xefff});
    host.iova_ranges.push_back({40 * 0x10000, k48});
    auto regions = devices::vfio::endpoint_reserved_regions(host, {}, 0, k48, IovaRange{0x8f000, 0x8ffff}, 8);
    CHECK(regions.size() <= 8);
    bool has_msi = false;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        if (regions[i].kind == ResvKind::Msi) has_msi = true;
        if (i) CHECK(regions[i - 1].last < regions[i].first);  // sorted, disjoint
    }
    CHECK(has_msi);
    // Every hole is still covered.
    for (std::uint64_t i = 0; i < 40; ++i) {
        const std::uint64_t hole = i * 0x10000 + 0xf000;
        bool covered = false;
        for (const auto& r : regions) covered |= r.first.value <= hole && hole <= r.last.value;
        CHECK(covered);
    }
}

TEST_CASE("narrow_geometry intersects page sizes and input ranges of every container") {
    HostIommuInfo a = rig_host();
    HostIommuInfo b{0x40201000 | 0x10000, {{0x1000, (std::uint64_t{1} << 44) - 1}}, std::nullopt};
    const HostIommuInfo* hosts[] = {&a, &b};
    auto g = devices::vfio::narrow_geometry({~std::uint64_t{0xfff}, 0, k48}, hosts, 4096);
    CHECK(g.page_size_mask == 0x40201000);
    CHECK(g.input_first == 0x1000);
    CHECK(g.input_last == (std::uint64_t{1} << 44) - 1);

    HostIommuInfo big{0x10000, {{0, k48}}, std::nullopt};
    const HostIommuInfo* only_big[] = {&big};
    CHECK_THROWS_WITH_AS(devices::vfio::narrow_geometry({~std::uint64_t{0xfff}, 0, k48}, only_big, 4096),
                         doctest::Contains("larger than the guest"), vmm::SetupError);
}
