#include "devices/vfio/assignment.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <linux/pci_regs.h>

#include "tests/support/vfio_test_env.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"

namespace {

namespace layout = vmm::layout;
using devices::vfio::Assignment;
using devices::vfio::AssignmentConfig;
using devices::vfio::testing::MockVfioHost;
using devices::vfio::testing::VfioFixture;

struct Machine {
    VfioFixture fx;  // 0000:00:01.0 in group 1
    std::vector<vmm::GuestRange> ram{layout::range(layout::kRamBase, 2 << 20)};
    vmm::GuestMemory memory{ram};
    devices::pci::HostBridge bridge{{layout::range(layout::kPcieEcamBase, layout::kPcieEcamSize),
                                     layout::range(layout::kPcieIoBase, layout::kPcieIoSize),
                                     layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
                                     layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size)}};
    Machine() { MockVfioHost::make_nvme_like(fx.host.add_device("0000:00:02.0", 2), 0x4000, 4, 0, 0x2000, 0x3000); }
    std::unique_ptr<Assignment> assign(AssignmentConfig config) {
        return std::make_unique<Assignment>(fx.host, memory, config, bridge, fx.allocator, fx.windows, fx.msi);
    }
    std::string error(AssignmentConfig config) {
        try {
            assign(config);
        } catch (const vmm::SetupError& e) {
            return e.what();
        }
        return "";
    }
};

}  // namespace

TEST_CASE("Without a vIOMMU all groups share one container that maps guest RAM once") {
    Machine m;
    auto a = m.assign({{"0000:00:01.0", "00:02.0"}, false});
    CHECK(m.fx.host.containers_open() == 1);
    CHECK(m.fx.host.dma_entries() == 1);
    CHECK(m.fx.host.dma_bytes() == (2u << 20));
    REQUIRE(a->functions().size() == 2);
    CHECK(a->functions()[0]->address() == devices::pci::Bdf{0, 0, 0});
    CHECK(a->functions()[1]->address() == devices::pci::Bdf{0, 1, 0});
    CHECK(m.bridge.function_count() == 2);
    CHECK(a->group_fds().size() == 2);
    CHECK(a->describe().find("vfio 0000:00:01.0 BAR0: 16 KiB") != std::string::npos);
    a.reset();
    CHECK(m.fx.host.dma_entries() == 0);
    CHECK(m.fx.host.open_fds() == 0);
    CHECK(m.fx.host.device("0000:00:01.0").resets == 2);
}

TEST_CASE("With --viommu vfio each group gets a container and nothing is mapped until the guest asks") {
    Machine m;
    auto a = m.assign({{"0000:00:01.0", "0000:00:02.0"}, true});
    CHECK(m.fx.host.containers_open() == 2);
    CHECK(m.fx.host.dma_entries() == 0);
    CHECK(a->host_infos().size() == 2);
    auto endpoints = a->iommu_endpoints(0, (std::uint64_t{1} << 48) - 1, {0x8090000, 0x809ffff}, 16);
    REQUIRE(endpoints.size() == 2);
    CHECK(endpoints[0].id == 0x00);
    CHECK(endpoints[1].id == 0x08);
    CHECK(endpoints[0].listener == a->mapper());
    REQUIRE(endpoints[0].reserved.size() == 3);
    CHECK(endpoints[0].reserved[1].kind == iommu::ResvKind::Msi);

    // The model drives the mapper: bypass + bus mastering pins RAM for that container only.
    auto model = std::make_shared<iommu::Iommu>();
    for (auto& e : endpoints) model->add_endpoint(e);
    CHECK(model->set_unattached_bypass(true));
    CHECK(m.fx.host.dma_entries() == 0);
    std::array<std::uint8_t, 2> master{PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0};
    a->functions()[0]->config_write(PCI_COMMAND, master);
    CHECK(m.fx.host.dma_entries() == 1);
    // Teardown: the functions stop mastering, the mapper drops everything; the vIOMMU's own
    // reset afterwards (back to bypass) must not pin guest RAM again.
    a->stop();
    CHECK(m.fx.host.dma_entries() == 0);
    const unsigned maps = m.fx.host.map_calls();
    CHECK(model->attach(0, 1, 0) == iommu::Status::Ok);
    model->reset();
    CHECK(m.fx.host.map_calls() == maps);
    a.reset();
    CHECK(m.fx.host.open_fds() == 0);
}

TEST_CASE("Bad --vfio-pci arguments fail with one line and leave nothing open or on the bus") {
    Machine m;
    CHECK(m.error({{"0000:00:01.0", "0000:00:09.0"}, false}).find("0000:00:09.0: no such PCI device") !=
          std::string::npos);
    CHECK(m.error({{"0000:00:01.0", "00:01.0"}, false}).find("given twice") != std::string::npos);
    CHECK(m.error({{"bogus"}, false}).find("not a PCI address") != std::string::npos);
    m.fx.host.add_group_member(2, "0000:00:02.1", "e1000e");
    const std::string viable = m.error({{"0000:00:01.0", "0000:00:02.0"}, true});
    CHECK(viable.find("VFIO group 2 is not viable: 0000:00:02.1 (bound to e1000e)") != std::string::npos);
    CHECK(m.fx.host.open_fds() == 0);
    CHECK(m.bridge.function_count() == 0);
    CHECK(m.fx.windows.trap_count() == 0);
}

TEST_CASE("A guest RAM map the host refuses undoes everything already opened") {
    Machine m;
    m.fx.host.set_memlock_budget(1 << 20);  // RAM is 2 MiB
    CHECK(m.error({{"0000:00:01.0"}, false}).find("locked-memory limit") != std::string::npos);
    CHECK(m.fx.host.open_fds() == 0);
    CHECK(m.fx.host.dma_entries() == 0);
    CHECK(m.bridge.function_count() == 0);
    CHECK(m.fx.host.device("0000:00:01.0").resets == 2);  // reset when opened and when closed
}

TEST_CASE("No --vfio-pci: nothing is opened at all") {
    Machine m;
    auto a = m.assign({{}, true});
    CHECK(a->functions().empty());
    CHECK(m.fx.host.open_fds() == 0);
}
