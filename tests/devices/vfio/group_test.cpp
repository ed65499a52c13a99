#include "devices/vfio/group.hpp"

#include <doctest/doctest.h>

#include <string>

#include "devices/vfio/vfio_device.hpp"
#include "tests/support/mock_vfio_host.hpp"
#include "vmm/base/error.hpp"

using devices::vfio::Container;
using devices::vfio::Device;
using devices::vfio::Group;
using devices::vfio::testing::MockVfioHost;

namespace {

std::string setup_error(auto&& fn) {
    try {
        fn();
    } catch (const vmm::SetupError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("normalize_bdf accepts kvmtool's two forms and rejects the rest") {
    using devices::vfio::normalize_bdf;
    CHECK(normalize_bdf("0000:00:03.0") == "0000:00:03.0");
    CHECK(normalize_bdf("00:03.0") == "0000:00:03.0");
    CHECK(normalize_bdf("0000:0A:1f.7") == "0000:0a:1f.7");
    CHECK_FALSE(normalize_bdf("0000:00:20.0"));  // device 32
    CHECK_FALSE(normalize_bdf("0000:00:03.8"));
    CHECK_FALSE(normalize_bdf("00:3.0"));
    CHECK_FALSE(normalize_bdf(""));
    CHECK_FALSE(normalize_bdf("0000:00:03.0,extra"));
    CHECK_FALSE(normalize_bdf("zz:00:03.0:0"));
}

TEST_CASE("group_of names the device and the fix when it cannot be assigned") {
    MockVfioHost k;
    k.add_device("0000:00:01.0", 1);
    k.add_group_member(2, "0000:00:02.0", "virtio-pci");
    k.add_group_member(3, "0000:00:03.0", "");
    CHECK(devices::vfio::group_of(k, "0000:00:01.0") == 1);
    CHECK(setup_error([&] { devices::vfio::group_of(k, "0000:00:09.0"); }).find("no such PCI device") !=
          std::string::npos);
    const std::string bound = setup_error([&] { devices::vfio::group_of(k, "0000:00:02.0"); });
    CHECK(bound.find("bound to virtio-pci, not vfio-pci") != std::string::npos);
    CHECK(bound.find("driver_override") != std::string::npos);
    CHECK(setup_error([&] { devices::vfio::group_of(k, "0000:00:03.0"); }).find("not bound to any driver") !=
          std::string::npos);
}

TEST_CASE("A group that is not viable is refused with every blocking device and its driver") {
    MockVfioHost k;
    k.add_device("0000:00:01.0", 1);
    k.add_group_member(1, "0000:00:01.1", "snd_hda_intel");
    k.add_group_member(1, "0000:00:01.2", "vfio-pci");
    auto container = std::make_shared<Container>(k, "c");
    const std::string e = setup_error([&] { Group g(k, 1, container); });
    CHECK(e.find("VFIO group 1 is not viable") != std::string::npos);
    CHECK(e.find("0000:00:01.1 (bound to snd_hda_intel)") != std::string::npos);
    CHECK(e.find("0000:00:01.2") == std::string::npos);
    CHECK(k.open_fds() == 1);  // only the container: the group fd was closed
}

TEST_CASE("Missing /dev/vfio/vfio and a busy group give one clear line") {
    MockVfioHost k;
    k.add_device("0000:00:01.0", 1);
    k.set_container_missing(true);
    CHECK(setup_error([&] { Container c(k, "c"); }).find("modprobe vfio-pci") != std::string::npos);
    k.set_container_missing(false);
    auto container = std::make_shared<Container>(k, "c");
    Group first(k, 1, container);
    CHECK(setup_error([&] { Group again(k, 1, container); }).find("in use by another process") != std::string::npos);
}

TEST_CASE("Container reads the host geometry: page sizes, IOVA ranges, DMA entries left") {
    MockVfioHost k;
    k.add_device("0000:00:01.0", 1);
    k.set_dma_limit(1000);
    auto container = std::make_shared<Container>(k, "c");
    Group g(k, 1, container);
    CHECK(container->info().page_sizes == 0x40201000);
    REQUIRE(container->info().iova_ranges.size() == 2);
    CHECK(container->info().iova_ranges[0].last == 0x7ffffff);
    CHECK(container->info().iova_ranges[1].first == 0x8100000);
    CHECK(container->info().dma_avail == 1000u);
    CHECK(g.reserved_regions().size() == 1);
    CHECK(g.reserved_regions()[0].type == "msi");
}

TEST_CASE("Device closes its fd before its group leaves the container (the EBUSY rule)") {
    MockVfioHost k;
    devices::vfio::testing::MockVfioHost::make_nvme_like(k.add_device("0000:00:01.0", 1), 0x4000, 4, 0, 0x2000, 0x3000);
    {
        auto container = std::make_shared<Container>(k, "c");
        auto group = std::make_shared<Group>(k, 1, container);
        Device d(group, "0000:00:01.0");
        CHECK(d.region(VFIO_PCI_BAR0_REGION_INDEX).size == 0x4000);
        CHECK(d.region(VFIO_PCI_CONFIG_REGION_INDEX).size == 4096);
        CHECK(d.irq_count(VFIO_PCI_MSIX_IRQ_INDEX) == 4);
        CHECK(d.can_reset());
        group.reset();
        container.reset();
    }
    REQUIRE(k.close_log().size() == 3);
    CHECK(k.close_log()[0] == "device 0000:00:01.0");
    CHECK(k.close_log()[1] == "group 1");
    CHECK(k.close_log()[2] == "container");
    CHECK(k.open_fds() == 0);
}

TEST_CASE("Device region I/O is bounds-checked") {
    MockVfioHost k;
    MockVfioHost::make_nvme_like(k.add_device("0000:00:01.0", 1), 0x4000, 4, 0, 0x2000, 0x3000);
    auto container = std::make_shared<Container>(k, "c");
    auto group = std::make_shared<Group>(k, 1, container);
    Device d(group, "0000:00:01.0");
    std::array<std::uint8_t, 4> buf{};
    CHECK(d.read(VFIO_PCI_BAR0_REGION_INDEX, 0x3ffc, buf));
    CHECK_FALSE(d.read(VFIO_PCI_BAR0_REGION_INDEX, 0x3ffe, buf));
    CHECK_FALSE(d.read(VFIO_PCI_BAR0_REGION_INDEX, ~std::uint64_t{0} - 1, buf));
    CHECK_FALSE(d.read(3, 0, buf));   // BAR3 does not exist
    CHECK_FALSE(d.read(99, 0, buf));  // no such region
    CHECK_FALSE(d.map(VFIO_PCI_BAR0_REGION_INDEX, 0x3000, 0x2000));
    CHECK(d.map(VFIO_PCI_BAR0_REGION_INDEX, 0x1000, 0x1000));
}

TEST_CASE("parse_reserved_regions reads the sysfs format and skips garbage") {
    auto r = devices::vfio::parse_reserved_regions(
        "0x0000000008000000 0x00000000080fffff msi\njunk\n0x10 0x1 reserved\n0xfee00000 0xfeefffff direct\n");
    REQUIRE(r.size() == 2);
    CHECK(r[0].first == 0x8000000);
    CHECK(r[0].last == 0x80fffff);
    CHECK(r[0].type == "msi");
    CHECK(r[1].type == "direct");
}
