#include "devices/vfio/dma_mapper.hpp"

#include <doctest/doctest.h>
#include <linux/vfio.h>

#include <memory>
#include <vector>

#include "devices/vfio/group.hpp"
#include "iommu/iommu.hpp"
#include "tests/support/mock_vfio_host.hpp"
#include "vmm/base/error.hpp"

namespace {

using devices::vfio::Container;
using devices::vfio::DmaMapper;
using devices::vfio::Group;
using devices::vfio::testing::MockVfioHost;
using iommu::Status;

constexpr std::uint64_t kRam0 = 0x80000000;
constexpr std::uint64_t kRam1 = 0x90000000;
constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint32_t kRW = iommu::kMapRead | iommu::kMapWrite;

std::vector<vmm::GuestRange> two_regions() {
    return {*vmm::GuestRange::make(vmm::GuestPhysAddr{kRam0}, 4 * kMiB),
            *vmm::GuestRange::make(vmm::GuestPhysAddr{kRam1}, 4 * kMiB)};
}

// A mock host with groups 1 and 2, one container each (or one shared), the model and a mapper.
struct Rig {
    MockVfioHost host;
    vmm::GuestMemory memory{two_regions()};
    std::shared_ptr<iommu::Iommu> model = std::make_shared<iommu::Iommu>();
    std::vector<std::shared_ptr<Container>> containers;
    std::vector<std::shared_ptr<Group>> groups;
    std::shared_ptr<DmaMapper> mapper;

    explicit Rig(bool shared_container = false, std::uint32_t dma_limit = 65535) {
        host.add_device("0000:00:01.0", 1);
        host.add_device("0000:00:02.0", 2);
        host.set_dma_limit(dma_limit);
        for (unsigned g = 1; g <= 2; ++g) {
            if (g == 1 || !shared_container)
                containers.push_back(std::make_shared<Container>(host, "container of group " + std::to_string(g)));
            groups.push_back(std::make_shared<Group>(host, g, containers.back()));
        }
        mapper = std::make_shared<DmaMapper>(memory, host);
        model->set_geometry({{~std::uint64_t{0xfff}, 0, (std::uint64_t{1} << 48) - 1}});
    }
    void add(iommu::EndpointId ep, std::size_t container) {
        mapper->add_endpoint(ep, containers.at(container));
        model->add_endpoint({ep, {}, mapper});
    }
    std::size_t entries(std::size_t container) const { return host.dma().at(containers.at(container)->fd()).size(); }
};

}  // namespace

TEST_CASE("Endpoints of one container in one domain cost one host map per guest MAP") {
    Rig rig;
    rig.add(8, 0);
    rig.add(9, 0);  // a second function of group 1
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->attach(9, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0x100000, 0x10ffff, kRam0, kRW) == Status::Ok);
    CHECK(rig.host.map_calls() == 1);
    CHECK(rig.entries(0) == 1);
    CHECK(rig.mapper->stats().spaces[0].shared_hits == 1);
    CHECK(rig.model->unmap(1, 0x100000, 0x10ffff) == Status::Ok);
    CHECK(rig.host.unmap_calls() == 1);
    CHECK(rig.entries(0) == 0);
}

TEST_CASE("A domain spanning two host groups maps once per container, with the guest's permissions") {
    Rig rig;
    rig.add(8, 0);
    rig.add(16, 1);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->attach(16, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0x200000, 0x201fff, kRam0 + 0x3000, iommu::kMapRead) == Status::Ok);
    CHECK(rig.host.map_calls() == 2);
    for (std::size_t c = 0; c < 2; ++c) {
        const auto dma = rig.host.dma().at(rig.containers[c]->fd());
        REQUIRE(dma.size() == 1);
        CHECK(dma[0].iova == 0x200000);
        CHECK(dma[0].size == 0x2000);
        CHECK(dma[0].flags == VFIO_DMA_MAP_FLAG_READ);
        CHECK(dma[0].host == rig.memory.host_pointer(vmm::GuestPhysAddr{kRam0 + 0x3000}, 1));
    }
}

TEST_CASE("A MAP crossing two RAM regions becomes two host entries, and a host failure rolls both back") {
    Rig rig;
    rig.add(8, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    // IOVA 1 MiB..9 MiB -> GPA kRam0 + 4 MiB - 4 KiB ... : the first page is in region 0, then a
    // hole (not RAM, skipped), then region 1.
    const std::uint64_t gpa = kRam0 + 4 * kMiB - 0x1000;
    const std::uint64_t size = (kRam1 - gpa) + 0x2000;
    CHECK(rig.model->map(1, 0x100000, 0x100000 + size - 1, gpa, kRW) == Status::Ok);
    REQUIRE(rig.entries(0) == 2);
    CHECK(rig.model->unmap(1, 0x100000, 0x100000 + size - 1) == Status::Ok);
    CHECK(rig.entries(0) == 0);

    rig.host.fail_map_after(1, EIO);  // the second fragment fails
    CHECK(rig.model->map(1, 0x100000, 0x100000 + size - 1, gpa, kRW) == Status::DevErr);
    CHECK(rig.entries(0) == 0);
    CHECK(rig.model->mappings(1)->empty());
    CHECK(rig.mapper->stats().spaces[0].host_failures == 1);
}

TEST_CASE("A failure on the second container undoes the first: guest and host views agree") {
    Rig rig;
    rig.add(8, 0);
    rig.add(16, 1);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->attach(16, 1, 0) == Status::Ok);
    rig.host.fail_map_after(1, ENOMEM);
    CHECK(rig.model->map(1, 0x0, 0xfff, kRam0, kRW) == Status::NoMem);
    CHECK(rig.host.dma_entries() == 0);
    CHECK(rig.model->mappings(1)->empty());
}

TEST_CASE("The DMA entry budget answers S_NOMEM before the host is asked, and the guest can go on") {
    Rig rig(false, 3);
    rig.add(8, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    for (std::uint64_t i = 0; i < 3; ++i)
        CHECK(rig.model->map(1, i * 0x1000, i * 0x1000 + 0xfff, kRam0, kRW) == Status::Ok);
    const unsigned calls = rig.host.map_calls();
    CHECK(rig.model->map(1, 0x10000, 0x10fff, kRam0, kRW) == Status::NoMem);
    CHECK(rig.host.map_calls() == calls);  // refused by the budget, not by the host
    CHECK(rig.mapper->stats().spaces[0].budget_refusals == 1);
    CHECK(rig.mapper->stats().spaces[0].entry_limit == 3);
    CHECK(rig.model->unmap(1, 0, 0xfff) == Status::Ok);
    CHECK(rig.model->map(1, 0x10000, 0x10fff, kRam0, kRW) == Status::Ok);  // room again
}

TEST_CASE("Without the DMA_AVAIL capability the budget comes from the module parameter") {
    MockVfioHost host;
    host.add_device("0000:00:01.0", 1);
    host.set_report_dma_avail(false);
    host.set_dma_limit(7);
    vmm::GuestMemory memory{two_regions()};
    auto container = std::make_shared<Container>(host, "c");
    Group group(host, 1, container);
    DmaMapper mapper(memory, host);
    mapper.add_endpoint(8, container);
    CHECK(mapper.stats().spaces[0].entry_limit == 7);
}

TEST_CASE("The locked-memory budget answers S_NOMEM before the host is asked") {
    Rig rig;
    rig.host.set_memlock_budget(64 * 1024);
    rig.mapper = std::make_shared<DmaMapper>(rig.memory, rig.host);  // reads the budget
    rig.add(8, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0, 0xffff, kRam0, kRW) == Status::Ok);
    CHECK(rig.model->map(1, 0x10000, 0x10fff, kRam0, kRW) == Status::NoMem);
    CHECK(rig.host.map_calls() == 1);
    CHECK(rig.mapper->stats().pinned_bytes == 0x10000);
}

TEST_CASE("Host refusals map to S_INVAL or S_DEVERR") {
    Rig rig;
    rig.add(8, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    // Inside the host's IOVA hole (0x8000000-0x80fffff): the host says EINVAL.
    CHECK(rig.model->map(1, 0x8000000, 0x8000fff, kRam0, kRW) == Status::Inval);
    rig.host.fail_map_after(0, EFAULT);
    CHECK(rig.model->map(1, 0, 0xfff, kRam0, kRW) == Status::DevErr);
    CHECK(rig.host.dma_entries() == 0);
}

TEST_CASE("MMIO and permissionless mappings are kept in the model only") {
    Rig rig;
    rig.add(8, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0x1000000, 0x1000fff, 0x08090000, iommu::kMapWrite | iommu::kMapMmio) == Status::Ok);
    CHECK(rig.model->map(1, 0x2000000, 0x2000fff, kRam0, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0x3000000, 0x3000fff, 0x40000000, kRW) == Status::Ok);  // not RAM: skipped
    CHECK(rig.host.map_calls() == 0);
    CHECK(rig.mapper->stats().spaces[0].guest_mappings == 3);
    CHECK(rig.model->unmap(1, 0x1000000, 0x3000fff) == Status::Ok);
    CHECK(rig.host.unmap_calls() == 0);
    CHECK(rig.mapper->stats().spaces[0].guest_mappings == 0);
}

TEST_CASE("Bypass maps guest RAM one to one only while a bypassing endpoint masters the bus") {
    Rig rig;
    rig.add(8, 0);
    CHECK(rig.model->set_unattached_bypass(true));
    CHECK(rig.host.dma_entries() == 0);  // boot bypass alone pins nothing
    rig.mapper->set_bus_master(8, true);
    REQUIRE(rig.entries(0) == 2);  // both RAM regions, IOVA = GPA
    CHECK(rig.host.dma_bytes() == 8 * kMiB);
    CHECK(rig.host.dma().at(rig.containers[0]->fd())[0].iova == kRam0);
    CHECK(rig.mapper->stats().spaces[0].identity);

    // The guest driver attaches it to a translating domain: the identity map goes.
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.entries(0) == 0);
    CHECK(rig.model->map(1, 0, 0xfff, kRam0, kRW) == Status::Ok);
    CHECK(rig.entries(0) == 1);
    // Back to bypass (DETACH with config.bypass = 1): its mappings go, the identity map returns.
    CHECK(rig.model->detach(8, 1) == Status::Ok);
    CHECK(rig.entries(0) == 2);
    rig.mapper->set_bus_master(8, false);
    CHECK(rig.entries(0) == 0);
}

TEST_CASE("An identity (bypass) domain maps on demand and unmaps when the endpoint leaves it") {
    Rig rig;
    rig.add(8, 0);
    rig.model->set_geometry({{~std::uint64_t{0xfff}, 0, (std::uint64_t{1} << 48) - 1},
                             0,
                             ~0u,
                             kRW | iommu::kMapMmio,
                             VIRTIO_IOMMU_ATTACH_F_BYPASS});
    CHECK(rig.model->attach(8, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS) == Status::Ok);
    CHECK(rig.entries(0) == 0);
    rig.mapper->set_bus_master(8, true);
    CHECK(rig.entries(0) == 2);
    CHECK(rig.model->detach(8, 5) == Status::Ok);  // unattached, blocked
    CHECK(rig.entries(0) == 0);
}

TEST_CASE("A refused bypass identity map leaves the endpoint blocked, not in its domain") {
    Rig rig(false, 1);  // room for one entry; the identity map needs two
    rig.add(8, 0);
    rig.mapper->set_bus_master(8, true);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0, 0xfff, kRam0, kRW) == Status::Ok);
    CHECK(rig.model->set_unattached_bypass(true));    // no unattached endpoint to move
    CHECK(rig.model->detach(8, 1) == Status::NoMem);  // bypass refused: detached and blocked
    CHECK(rig.entries(0) == 0);
    CHECK(rig.model->endpoint_stats(8)->blocked);
    CHECK_FALSE(rig.model->mappings(1));
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);  // the guest can start over
    CHECK(rig.model->map(1, 0, 0xfff, kRam0, kRW) == Status::Ok);
    CHECK(rig.entries(0) == 1);
}

TEST_CASE("Functions of one host group cannot be split across guest domains") {
    Rig rig;
    rig.add(8, 0);
    rig.add(9, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->attach(9, 2, 0) == Status::Inval);
    CHECK(rig.model->attach(9, 1, 0) == Status::Ok);
}

TEST_CASE("Detaching one endpoint keeps the mappings its container-mate still holds") {
    Rig rig;
    rig.add(8, 0);
    rig.add(9, 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->attach(9, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0, 0xfff, kRam0, kRW) == Status::Ok);
    CHECK(rig.model->detach(9, 1) == Status::Ok);
    CHECK(rig.entries(0) == 1);
    CHECK(rig.model->detach(8, 1) == Status::Ok);  // the domain dies with its mappings
    CHECK(rig.entries(0) == 0);
}

TEST_CASE("Re-attach replays into the container; reset and teardown leave no host mappings") {
    Rig rig;
    rig.add(8, 0);
    rig.add(16, 1);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0, 0x1fff, kRam0, kRW) == Status::Ok);
    CHECK(rig.model->attach(16, 1, 0) == Status::Ok);  // replayed
    CHECK(rig.entries(1) == 1);
    rig.model->reset();
    CHECK(rig.host.dma_entries() == 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->map(1, 0, 0x1fff, kRam0, kRW) == Status::Ok);
    rig.model.reset();  // drops the model's reference
    rig.mapper.reset();
    CHECK(rig.host.dma_entries() == 0);
}

TEST_CASE("Without a vIOMMU all guest RAM is mapped at once, or setup fails with the reason") {
    Rig rig(true);
    rig.mapper->map_all_ram(rig.containers[0]);
    CHECK(rig.entries(0) == 2);
    CHECK(rig.host.dma_bytes() == 8 * kMiB);
    rig.mapper.reset();
    CHECK(rig.host.dma_entries() == 0);

    Rig tight;
    tight.host.set_memlock_budget(kMiB);
    DmaMapper mapper(tight.memory, tight.host);
    CHECK_THROWS_WITH_AS(mapper.map_all_ram(tight.containers[0]), doctest::Contains("locked-memory limit"),
                         vmm::SetupError);
    CHECK(tight.host.dma_entries() == 0);
}

TEST_CASE("Identity maps skip guest RAM the host cannot translate") {
    Rig rig;
    rig.host.set_iova_ranges({{0, kRam1 + kMiB - 1}});  // the host stops inside region 1
    MockVfioHost& k = rig.host;
    k.add_device("0000:00:05.0", 5);
    auto container = std::make_shared<Container>(k, "c5");
    Group group(k, 5, container);
    DmaMapper mapper(rig.memory, k);
    mapper.map_all_ram(container);
    const auto dma = k.dma().at(container->fd());
    REQUIRE(dma.size() == 2);
    CHECK(dma[1].iova == kRam1);
    CHECK(dma[1].size == kMiB);
}

TEST_CASE(
    "Regression: a reset whose bypass identity map does not fit leaves the function blocked, not in its old domain") {
    // Status 0 with bypass = 1 while a bus-mastering function is attached and the
    // identity map exceeds RLIMIT_MEMLOCK. The forced detach failed, the mapper rolled back to the
    // old domain and the guest's mapping stayed in the host IOMMU with no model mapping left.
    Rig rig;
    rig.host.set_memlock_budget(64 * 1024);  // one 4 KiB mapping fits, 8 MiB of guest RAM does not
    rig.mapper = std::make_shared<DmaMapper>(rig.memory, rig.host);
    rig.add(8, 0);
    REQUIRE(rig.model->attach(8, 1, 0) == Status::Ok);
    REQUIRE(rig.model->map(1, 0x100000, 0x100fff, kRam0, kRW) == Status::Ok);
    rig.mapper->set_bus_master(8, true);
    REQUIRE(rig.model->set_unattached_bypass(true));  // no unattached endpoint to follow it
    REQUIRE(rig.entries(0) == 1);
    rig.model->reset();
    CHECK(rig.entries(0) == 0);  // blocked: nothing of the old domain, no identity map
    CHECK(rig.mapper->stats().pinned_bytes == 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.model->mappings(1)->empty());
    CHECK(rig.entries(0) == 0);
}

TEST_CASE("Regression: ATTACH into a domain too big for the VFIO budget is refused before any host ioctl") {
    // Replaying a domain that the guest filled through an emulated endpoint
    // issued a MAP_DMA per mapping, then as many UNMAP_DMA, before answering S_NOMEM.
    Rig rig(false, 100);
    rig.model->add_endpoint({1, {}, nullptr});  // emulated
    REQUIRE(rig.model->attach(1, 1, 0) == Status::Ok);
    for (std::uint64_t i = 0; i < 200; ++i)
        REQUIRE(rig.model->map(1, i * 0x1000, i * 0x1000 + 0xfff, kRam0 + (i % 1024) * 0x1000, kRW) == Status::Ok);
    rig.add(8, 0);
    const unsigned maps = rig.host.map_calls(), unmaps = rig.host.unmap_calls();
    CHECK(rig.model->attach(8, 1, 0) == Status::NoMem);
    CHECK(rig.host.map_calls() == maps);
    CHECK(rig.host.unmap_calls() == unmaps);
    CHECK(rig.entries(0) == 0);
    CHECK(rig.mapper->stats().spaces[0].budget_refusals == 1);
    CHECK(rig.model->mappings(1)->size() == 200);  // the emulated endpoint's domain is untouched

    // When it fits, one MAP_DMA per mapping; a host failure part way is undone with one
    // UNMAP_DMA (the container held nothing else), not one per mapping.
    REQUIRE(rig.model->unmap(1, 50 * 0x1000, ~std::uint64_t{0} >> 16) == Status::Ok);
    rig.host.fail_map_after(30, EIO);
    CHECK(rig.model->attach(8, 1, 0) == Status::DevErr);
    CHECK(rig.host.map_calls() - maps == 31);
    CHECK(rig.host.unmap_calls() - unmaps == 1);
    CHECK(rig.entries(0) == 0);
    CHECK(rig.model->attach(8, 1, 0) == Status::Ok);
    CHECK(rig.host.map_calls() - maps == 81);
    CHECK(rig.entries(0) == 50);
}
