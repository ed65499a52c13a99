// The isolation invariant of shadowed tables (iommu/page_tables.md, "Shadowed endpoints";
// CONFORMANCE.md D72, D73, D76), through the real DmaMapper and the mock VFIO kernel: a guest
// table changed at random, invalidated or not, endpoints attached, detached and reset, host
// failures injected (MAP_DMA and UNMAP_DMA errors, a small entry budget). After every step every
// VFIO entry is inside what the table allowed, as of the last INVALIDATE naming its pages, with
// no more permission; after an INVALIDATE answered S_OK the host holds all of what the table
// allows in its range.
//
// LKVM_ISOLATION_STEPS=N runs N steps per seed instead of the short default (`make unit`).
#include <doctest/doctest.h>
#include <linux/vfio.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "iommu/uapi/virtio_iommu_tables.h"
#include "tests/support/fake_driver.hpp"
#include "tests/support/stage1_tables.hpp"
#include "tests/support/vfio_isolation.hpp"

namespace {

using devices::vfio::testing::MockDma;
using support::kIsolationVfio;

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kBlock = 2 << 20;   // a 2 MiB block at IOVA kBlock
constexpr std::uint64_t kWindowPages = 64;  // pages at IOVA 0 .. 256 KiB
constexpr iommu::DomainId kDomain = 5;
constexpr iommu::EndpointId kEmulated = 1;

// What a page may reach: its guest-physical address and whether writes are allowed.
struct Allowed {
    std::uint64_t gpa = 0;
    bool writable = false;
};

struct World {
    support::FakeGuestRam ram{support::FakeGuestRam::kDefaultBase, 16 << 20};
    support::Stage1Tables tables{ram, 12, 48};
    support::IsolationHost vfio;
    std::shared_ptr<iommu::Iommu> model = std::make_shared<iommu::Iommu>(iommu::Limits{}, &ram.memory());
    // The guest's pages (data the table points to): 64 pages, and a 2 MiB-aligned block.
    const std::uint64_t data = ram.alloc(kWindowPages * kPage, kPage);
    const std::uint64_t block_data = ram.alloc(2 * kBlock, kBlock);
    // The test's model: per 4K page, what the table allowed as of the last INVALIDATE naming it.
    std::map<std::uint64_t, Allowed> allowed;

    explicit World(std::uint32_t entry_limit) : vfio(ram.memory(), entry_limit) {
        model->add_endpoint({kEmulated, {}, nullptr});
        vfio.add_endpoints(*model);
    }
    iommu::TableDescriptor table() const {
        iommu::TableDescriptor t;
        t.format = LKVM_VIOMMU_FMT_ARM_LPAE_S1;
        t.asid = 1;
        t.tcr = tables.tcr();
        t.ttbr = tables.root();
        t.stage1 = *iommu::decode_stage1(t.tcr, t.ttbr);
        return t;
    }
    // The pages the test tracks: the window and the block.
    template <class Fn>
    void for_each_page(std::uint64_t first, std::uint64_t last, Fn&& fn) const {
        for (std::uint64_t p = 0; p < kWindowPages; ++p)
            if (p * kPage >= first && p * kPage <= last) fn(p * kPage);
        for (std::uint64_t p = kBlock; p < 2 * kBlock; p += kPage)
            if (p >= first && p <= last) fn(p);
    }
    // INVALIDATE (or the first external endpoint's ATTACH) of [first, last]: the test's model
    // takes the table as it is now, as a walk finds it.
    void snapshot(std::uint64_t first, std::uint64_t last) {
        const iommu::Stage1Config config = table().stage1;
        for_each_page(first, last, [&](std::uint64_t page) {
            const iommu::WalkResult walked = iommu::walk_stage1(config, ram.memory(), page);
            if (walked.leaf)
                allowed[page] = Allowed{walked.leaf->gpa_base + (page - walked.leaf->iova_base), walked.leaf->writable};
            else allowed.erase(page);
        });
    }
    bool in_domain(iommu::EndpointId ep) const { return model->endpoint_stats(ep)->domain == kDomain; }
    bool container_in_domain(std::size_t c) const {
        for (iommu::EndpointId ep : kIsolationVfio)
            if (support::isolation_container(ep) == c && in_domain(ep)) return true;
        return false;
    }
};

// Host entries of container `c` that the test's model does not allow (0 when isolation holds).
std::size_t stale_entries(const World& w, std::size_t c, const std::vector<MockDma>& entries) {
    std::size_t stale = 0;
    for (const MockDma& dma : entries) {
        bool ok = w.container_in_domain(c);
        for (std::uint64_t offset = 0; ok && offset < dma.size; offset += kPage) {
            auto it = w.allowed.find(dma.iova + offset);
            ok = it != w.allowed.end() &&
                 w.ram.memory().host_pointer(vmm::GuestPhysAddr{it->second.gpa}, kPage) ==
                     static_cast<const std::uint8_t*>(dma.host) + offset &&
                 (it->second.writable || !(dma.flags & VFIO_DMA_MAP_FLAG_WRITE));
        }
        stale += ok ? 0 : 1;
    }
    return stale;
}

// Pages of [first, last] the test's model allows (in guest RAM) that a container's entries lack.
std::size_t missing_pages(const World& w, const std::vector<MockDma>& entries, std::uint64_t first,
                          std::uint64_t last) {
    std::size_t missing = 0;
    w.for_each_page(first, last, [&](std::uint64_t page) {
        auto it = w.allowed.find(page);
        if (it == w.allowed.end() || !w.ram.memory().host_pointer(vmm::GuestPhysAddr{it->second.gpa}, kPage)) return;
        bool held = false;
        for (const MockDma& dma : entries) held |= dma.iova <= page && page < dma.iova + dma.size;
        missing += held ? 0 : 1;
    });
    return missing;
}

}  // namespace

TEST_CASE("D76 shadow isolation: random table changes and INVALIDATEs with host failures never exceed the table") {
    std::uint64_t failures_injected = 0, refusals = 0, exact_checks = 0, steps_run = 0;
    for (unsigned seed : {1u, 2u, 3u, 4u}) {
        CAPTURE(seed);
        std::mt19937_64 rng(seed);
        auto pick = [&](std::uint64_t n) { return rng() % n; };
        World w(static_cast<std::uint32_t>(6 + pick(40)));
        for (std::uint64_t step = 0; step < support::isolation_steps(1500); ++step) {
            CAPTURE(step);
            failures_injected += support::inject_host_failures(w.vfio.host, pick, 4, 6, 6);
            const iommu::EndpointId ep = pick(5) == 0 ? kEmulated : kIsolationVfio[pick(3)];
            std::optional<std::pair<std::uint64_t, std::uint64_t>> invalidated;
            iommu::Status status = iommu::Status::Ok;
            switch (pick(16)) {
                case 0:
                case 1: {
                    // The first external endpoint's attach walks the whole table.
                    const bool walks = !w.model->domain_stats(kDomain) || !w.model->domain_stats(kDomain)->shadowed;
                    status = iommu::Iommu::Batch(*w.model).attach_table(ep, kDomain, w.table());
                    if (walks && ep != kEmulated && w.in_domain(ep)) {
                        w.allowed.clear();
                        w.snapshot(0, ~std::uint64_t{0});
                    }
                    break;
                }
                case 2: status = w.model->detach(ep, kDomain); break;
                case 3:
                    if (pick(6) == 0) w.model->reset();
                    break;
                case 4:
                case 5:
                case 6: {  // INVALIDATE: a range, or the whole domain
                    iommu::Invalidation what;
                    if (pick(3) != 0) {
                        what.scope = iommu::InvalidateScope::Range;
                        what.first = pick(kWindowPages + 8) * kPage;
                        what.last = what.first + (1 + pick(16)) * kPage - 1;
                        if (pick(5) == 0) what.last = what.first + kBlock;  // into the block
                    }
                    const iommu::Status s = iommu::Iommu::Batch(*w.model).invalidate(kDomain, what);
                    if (s == iommu::Status::NoEnt) break;
                    status = s;
                    const std::uint64_t first = what.scope == iommu::InvalidateScope::Range ? what.first : 0;
                    const std::uint64_t last =
                        what.scope == iommu::InvalidateScope::Range ? what.last : ~std::uint64_t{0};
                    if (w.model->domain_stats(kDomain) && w.model->domain_stats(kDomain)->shadowed) {
                        w.snapshot(first, last);
                        if (s == iommu::Status::Ok) invalidated = {first, last};
                    }
                    break;
                }
                default: {  // the guest changes its table, without INVALIDATE
                    const std::uint64_t attrs =
                        (pick(6) == 0 ? 0 : support::kDescAf) | (pick(3) == 0 ? support::kDescReadOnly : 0);
                    if (pick(8) == 0) {  // the block: mapped (in RAM) or gone
                        if (pick(2)) w.tables.map(kBlock, w.block_data + pick(2) * kBlock, 2, attrs);
                        else w.tables.unmap(kBlock, 2);
                        break;
                    }
                    const std::uint64_t iova = pick(kWindowPages) * kPage;
                    switch (pick(4)) {
                        case 0: w.tables.unmap(iova); break;
                        case 1: w.tables.map(iova, 0x7000'0000 + iova, 3, attrs); break;  // outside RAM
                        default: w.tables.map(iova, w.data + pick(kWindowPages) * kPage, 3, attrs); break;
                    }
                    break;
                }
            }
            refusals += status == iommu::Status::NoMem ? 1 : 0;
            w.vfio.host.clear_failures();
            ++steps_run;
            for (std::size_t c = 0; c < w.vfio.containers.size(); ++c) {
                const std::vector<MockDma> entries = w.vfio.entries(c);
                const std::size_t stale = stale_entries(w, c, entries);
                if (stale != 0) FAIL(stale << " host entries of container " << c << " the table did not allow");
                if (invalidated && w.container_in_domain(c)) {
                    ++exact_checks;
                    const std::size_t missing = missing_pages(w, entries, invalidated->first, invalidated->second);
                    if (missing != 0) FAIL(missing << " allowed pages missing from container " << c << " after S_OK");
                }
            }
            w.vfio.check_accounting();
        }
        CHECK(w.model->stats().forced_detach_failures == 0);
    }
    MESSAGE(steps_run << " steps, " << failures_injected << " host failures injected, " << refusals << " S_NOMEM, "
                      << exact_checks << " exactness checks");
    CHECK(refusals > 0);
    CHECK(exact_checks > steps_run / 20);
}
