// The isolation invariant of the vIOMMU <-> VFIO path, checked after every step of random guest
// requests, resets and Bus Master changes with host failures injected (MAP_DMA and UNMAP_DMA
// errors, small entry and locked-memory budgets): every entry a VFIO container holds is allowed
// by the IOMMU model for some endpoint of that container -- inside one of its domain's mappings
// with no more permission, or guest RAM one to one while the model lets the endpoint bypass.
//
// LKVM_ISOLATION_STEPS=N runs N steps per seed instead of the short default (`make unit`).
#include <doctest/doctest.h>
#include <linux/vfio.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/support/vfio_isolation.hpp"

namespace {

using devices::vfio::testing::MockDma;
using support::kIsolationVfio;

constexpr std::uint64_t kRam0 = 0x80000000;
constexpr std::uint64_t kRam1 = 0x80800000;  // right after region 0's 4 MiB: mappings may span both
constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kPage = 4096;
constexpr iommu::EndpointId kEmulated = 1;
struct World {
    vmm::GuestMemory memory{std::vector<vmm::GuestRange>{*vmm::GuestRange::make(vmm::GuestPhysAddr{kRam0}, 4 * kMiB),
                                                         *vmm::GuestRange::make(vmm::GuestPhysAddr{kRam1}, 4 * kMiB)}};
    support::IsolationHost vfio;
    std::shared_ptr<iommu::Iommu> model = std::make_shared<iommu::Iommu>();

    World(std::uint32_t entry_limit, std::optional<std::uint64_t> memlock) : vfio(memory, entry_limit, memlock) {
        model->set_geometry({{~(kPage - 1), 0, (std::uint64_t{1} << 48) - 1},
                             0,
                             ~0u,
                             iommu::kMapRead | iommu::kMapWrite | iommu::kMapMmio,
                             VIRTIO_IOMMU_ATTACH_F_BYPASS});
        model->add_endpoint({kEmulated, {}, nullptr});
        vfio.add_endpoints(*model);
    }
};

// Does the model let `endpoint` reach host entry `dma`?
bool allowed(const World& w, iommu::EndpointId endpoint, const MockDma& dma) {
    const auto e = w.model->endpoint_stats(endpoint);
    if (!e) return false;
    const std::uint64_t last = dma.iova + dma.size - 1;
    auto identity = [&] { return w.memory.host_pointer(vmm::GuestPhysAddr{dma.iova}, dma.size) == dma.host; };
    if (!e->domain) return w.model->unattached_bypass() && !e->blocked && identity();
    if (w.model->domain_stats(*e->domain)->bypass) return identity();
    const std::vector<iommu::Mapping> mappings = w.model->mappings(*e->domain).value_or(std::vector<iommu::Mapping>{});
    for (const iommu::Mapping& m : mappings) {
        if (dma.iova < m.first.value || last > m.last.value || (m.flags & iommu::kMapMmio)) continue;
        const std::uint64_t gpa = m.gpa.value + (dma.iova - m.first.value);
        if (w.memory.host_pointer(vmm::GuestPhysAddr{gpa}, dma.size) != dma.host) continue;
        if ((dma.flags & VFIO_DMA_MAP_FLAG_READ) && !(m.flags & iommu::kMapRead)) continue;
        if ((dma.flags & VFIO_DMA_MAP_FLAG_WRITE) && !(m.flags & iommu::kMapWrite)) continue;
        return true;
    }
    return false;
}

// Host entries no endpoint of their container may reach (0 when isolation holds).
std::size_t stale_entries(const World& w) {
    std::size_t stale = 0;
    for (std::size_t c = 0; c < w.vfio.containers.size(); ++c) {
        for (const MockDma& entry : w.vfio.entries(c)) {
            bool ok = false;
            for (iommu::EndpointId ep : kIsolationVfio)
                if (support::isolation_container(ep) == c) ok |= allowed(w, ep, entry);
            stale += ok ? 0 : 1;
        }
    }
    return stale;
}

}  // namespace

TEST_CASE("Isolation: random requests with host failures never leave a host entry the model does not allow") {
    std::uint64_t failures_injected = 0, refusals = 0, steps_run = 0;
    for (unsigned seed : {1u, 2u, 3u, 4u}) {
        CAPTURE(seed);
        std::mt19937_64 rng(seed);
        auto pick = [&](std::uint64_t n) { return rng() % n; };
        // Budgets: a few entries, and locked memory that fits one bypass identity map (8 MiB)
        // at most, or none.
        const std::optional<std::uint64_t> memlock_choices[] = {std::nullopt, 9 * kMiB, 64 * 1024};
        World w(static_cast<std::uint32_t>(8 + pick(24)), memlock_choices[seed % 3]);
        for (std::uint64_t step = 0; step < support::isolation_steps(2500); ++step) {
            CAPTURE(step);
            failures_injected += support::inject_host_failures(w.vfio.host, pick, 3, 4, 4);
            const iommu::EndpointId ep = pick(4) == 0 ? kEmulated : kIsolationVfio[pick(3)];
            const iommu::DomainId domain = 1 + static_cast<iommu::DomainId>(pick(3));  // 3 is a bypass domain
            const std::uint64_t first = pick(48) * kPage;
            const std::uint64_t size = (1 + pick(3)) * kPage;
            iommu::Status status = iommu::Status::Ok;
            switch (pick(16)) {
                case 0:
                case 1:
                case 2: status = w.model->attach(ep, domain, domain == 3 ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0); break;
                case 3:
                case 4: status = w.model->detach(ep, domain); break;
                case 5:
                case 6: status = w.model->unmap(domain, first, first + pick(8) * kPage + kPage - 1); break;
                case 7: w.model->set_unattached_bypass(pick(2) == 1); break;
                case 8: w.vfio.mapper->set_bus_master(kIsolationVfio[pick(3)], pick(3) != 0); break;
                case 9:
                    if (pick(8) == 0) w.model->reset();
                    break;
                default: {
                    // GPAs in region 0, across the region boundary, or outside RAM; any permission.
                    const std::uint64_t gpa =
                        pick(4) == 0 ? 0x40000000 + first : kRam0 + 4 * kMiB - 2 * kPage + first % (8 * kPage);
                    const std::uint32_t flags[] = {iommu::kMapRead, iommu::kMapWrite,
                                                   iommu::kMapRead | iommu::kMapWrite,
                                                   iommu::kMapWrite | iommu::kMapMmio, 0};
                    status = w.model->map(domain, first, first + size - 1, gpa, flags[pick(5)]);
                    break;
                }
            }
            refusals += status == iommu::Status::NoMem ? 1 : 0;
            w.vfio.host.clear_failures();
            ++steps_run;
            const std::size_t stale = stale_entries(w);
            if (stale != 0) {
                FAIL_CHECK(stale << " host entries the model does not allow after step " << step);
                break;
            }
            w.vfio.check_accounting();
        }
        CHECK(w.model->stats().forced_detach_failures == 0);
    }
    MESSAGE(steps_run << " steps, " << failures_injected << " host failures injected, " << refusals << " S_NOMEM");
    CHECK(failures_injected > steps_run / 4);
    CHECK(refusals > 0);
}
