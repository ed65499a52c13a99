// Shadowed endpoints (iommu/page_tables.md, "Shadowed endpoints"; CONFORMANCE.md D63, D71-D75):
// a table-mode domain's leaves mirrored into the external IOMMU of endpoints that have one,
// driven through the fake driver, with MockIommuBackend standing for the VFIO container (it
// checks the listener contract and injects refusals).
#include <doctest/doctest.h>

#include <endian.h>

#include <cstring>
#include <vector>

#include "iommu/uapi/virtio_iommu_tables.h"
#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/stage1_tables.hpp"

using namespace viommu_test;
using iommu::testing::MockIommuBackend;

namespace {

constexpr std::uint64_t kTablesFeature = std::uint64_t{1} << LKVM_VIOMMU_F_ATTACH_TABLE;
constexpr std::uint64_t kRam = support::FakeGuestRam::kDefaultBase;
constexpr std::uint32_t kR = iommu::kMapRead;
constexpr std::uint32_t kRW = iommu::kMapRead | iommu::kMapWrite;
constexpr std::uint64_t kMiB = 1 << 20;

iommu::Mapping run(std::uint64_t first, std::uint64_t last, std::uint64_t gpa, std::uint32_t flags) {
    return iommu::Mapping{vmm::Iova{first}, vmm::Iova{last}, vmm::GuestPhysAddr{gpa}, flags};
}

// A started harness with tables accepted, emulated endpoints 1 and 2, external ones 10 and 11 on
// one mock backend, and a 4K, 48-bit table.
struct ShadowRig {
    explicit ShadowRig(iommu::Limits limits = {}) : ShadowRig(options(limits)) {}
    explicit ShadowRig(Options o) : h(std::move(o)), tables(h.ram(), 12, 48) {
        REQUIRE(h.start());
        REQUIRE((h.driver->negotiated() & kTablesFeature) != 0);
    }
    // The options of every rig: endpoints 10 and 11 on `backend`.
    static Options options(iommu::Limits limits = {}) {
        Options o = with_backend(std::make_shared<MockIommuBackend>(), {10, 11});
        o.config.tables = true;
        o.limits = limits;
        o.ram_size = 16 * kMiB;
        return o;
    }
    TableFields fields() const { return TableFields{LKVM_VIOMMU_FMT_ARM_LPAE_S1, 1, tables.tcr(), tables.root(), 0}; }
    MockIommuBackend& backend() const {
        return *std::static_pointer_cast<MockIommuBackend>(h.options_.endpoints.back().listener);
    }
    // What the mock host holds for `endpoint`, in IOVA order.
    std::vector<iommu::Mapping> host(iommu::EndpointId endpoint) const {
        std::vector<iommu::Mapping> out;
        if (const auto* state = backend().state(endpoint))
            for (const auto& [first, mapping] : state->mappings) out.push_back(mapping);
        return out;
    }
    iommu::ShadowStats shadow(std::uint32_t domain) {
        auto stats = h.iommu->domain_stats(domain);
        REQUIRE(stats);
        return stats->shadow;
    }

    Harness h;
    support::Stage1Tables tables;
};

}  // namespace

TEST_CASE("D63 D71 PROBE sets TABLE_F_SHADOW for endpoints with an external IOMMU only") {
    ShadowRig rig;
    auto flags_of = [&](std::uint32_t endpoint) {
        Reply reply = rig.h.probe(endpoint);
        REQUIRE(reply.status() == S(Status::Ok));
        lkvm_viommu_probe_table_format format;
        std::memcpy(&format, reply.writable.data(), sizeof format);
        REQUIRE(le16toh(format.head.type) == LKVM_VIOMMU_PROBE_T_TABLE_FORMAT);
        return le64toh(format.flags);
    };
    CHECK(flags_of(10) == LKVM_VIOMMU_TABLE_F_SHADOW);
    CHECK(flags_of(1) == 0);
}

TEST_CASE("D71 ATTACH_TABLE maps every valid leaf into the host: runs, permissions, blocks, RESV_MEM left out") {
    Options options = ShadowRig::options();
    options.endpoints[2].reserved = {{vmm::Iova{0x80'0000}, vmm::Iova{0x80'0fff}, iommu::ResvKind::Msi}};
    ShadowRig rig(options);
    // Three contiguous pages (one run), a read-only page after them (its own run), a page with
    // AF = 0 (not allowed: faults), a 2 MiB block, a page in the MSI region (never shadowed), and
    // a page whose table is outside guest RAM.
    for (std::uint64_t i = 0; i < 3; ++i) rig.tables.map(0x1000 + i * 0x1000, kRam + 0x10'0000 + i * 0x1000);
    rig.tables.map(0x4000, kRam + 0x10'3000, 3, support::kDescAf | support::kDescReadOnly);
    rig.tables.map(0x6000, kRam + 0x10'6000, 3, 0);
    rig.tables.map(0x20'0000, kRam + 0x40'0000, 2);
    rig.tables.map(0x80'0000, kRam + 0x10'8000);
    rig.tables.set(0x4000'0000, 2, 0x7000'0000 | support::kDescValid | support::kDescTable);

    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x1000, 0x3fff, kRam + 0x10'0000, kRW),
                                                      run(0x4000, 0x4fff, kRam + 0x10'3000, kR),
                                                      run(0x20'0000, 0x3f'ffff, kRam + 0x40'0000, kRW)});
    CHECK(rig.backend().violations() == 0);
    const iommu::ShadowStats shadow = rig.shadow(5);
    CHECK(shadow.runs == 3);
    CHECK(shadow.bytes == 0x3000 + 0x1000 + 0x20'0000);
    CHECK(shadow.rewalks == 1);
    CHECK(rig.h.iommu->domain_stats(5)->shadowed);

    // A second external endpoint gets the runs replayed; an emulated one walks the table itself.
    REQUIRE(rig.h.attach(11, 5) == S(Status::Ok));
    CHECK(rig.host(11) == rig.host(10));
    REQUIRE(rig.h.attach(1, 5) == S(Status::Ok));
    CHECK(rig.h.gpa_of(1, 0x2010) == kRam + 0x10'1010);
    CHECK(rig.shadow(5).rewalks == 1);  // no new walk for them
    CHECK(rig.h.iommu->stats().live_mappings == 3);
}

TEST_CASE("D71 an external endpoint joining a table domain of emulated endpoints gets the table walked") {
    ShadowRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    rig.tables.map(0x1000, kRam + 0x1000);
    CHECK_FALSE(rig.h.iommu->domain_stats(5)->shadowed);
    REQUIRE(rig.h.attach(10, 5) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x1000, 0x1fff, kRam + 0x1000, kRW)});
}

TEST_CASE("D72 INVALIDATE re-walks its range: new leaves mapped, removed and changed ones unmapped") {
    ShadowRig rig;
    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.host(10).empty());

    // New mappings are invisible to the host until an INVALIDATE names them (TABLE_F_SHADOW).
    for (std::uint64_t i = 0; i < 4; ++i) rig.tables.map(0x10'0000 + i * 0x1000, kRam + 0x20'0000 + i * 0x1000);
    CHECK(rig.host(10).empty());
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x10'0000, 4)) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x10'0000, 0x10'3fff, kRam + 0x20'0000, kRW)});
    rig.backend().clear_log();

    // An INVALIDATE of an unchanged range touches nothing in the host.
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x10'0000, 4)) == S(Status::Ok));
    CHECK(rig.backend().calls().empty());

    // A leaf removed from the middle of a run: the run goes whole, its parts outside the range
    // come back as they were; the host cannot split an entry.
    rig.tables.unmap(0x10'1000);
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x10'1000, 1)) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x10'0000, 0x10'0fff, kRam + 0x20'0000, kRW),
                                                      run(0x10'2000, 0x10'3fff, kRam + 0x20'2000, kRW)});

    // Changed output address and permission.
    rig.tables.map(0x10'2000, kRam + 0x30'0000);
    rig.tables.map(0x10'3000, kRam + 0x20'3000, 3, support::kDescAf | support::kDescReadOnly);
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x10'2000, 2)) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x10'0000, 0x10'0fff, kRam + 0x20'0000, kRW),
                                                      run(0x10'2000, 0x10'2fff, kRam + 0x30'0000, kRW),
                                                      run(0x10'3000, 0x10'3fff, kRam + 0x20'3000, kR)});

    // A change outside the range named stays out of the host until it is invalidated: by ASID or
    // by domain, the whole table is walked again.
    rig.tables.unmap(0x10'0000);
    rig.tables.map(0x50'0000, kRam + 0x50'0000);
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x10'2000, 1)) == S(Status::Ok));
    CHECK(rig.host(10).front() == run(0x10'0000, 0x10'0fff, kRam + 0x20'0000, kRW));
    InvalidateFields by_asid;
    by_asid.scope = LKVM_VIOMMU_INV_ASID;
    by_asid.flags = LKVM_VIOMMU_INV_F_ASID;
    by_asid.asid = 1;
    REQUIRE(rig.h.invalidate(5, by_asid) == S(Status::Ok));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x10'2000, 0x10'2fff, kRam + 0x30'0000, kRW),
                                                      run(0x10'3000, 0x10'3fff, kRam + 0x20'3000, kR),
                                                      run(0x50'0000, 0x50'0fff, kRam + 0x50'0000, kRW)});
    rig.tables.unmap(0x50'0000);
    REQUIRE(rig.h.invalidate(5) == S(Status::Ok));  // by domain
    CHECK(rig.host(10).size() == 2);
    CHECK(rig.backend().violations() == 0);
    CHECK(rig.h.iommu->stats().live_mappings == 2);
    const iommu::ShadowStats shadow = rig.shadow(5);
    CHECK(shadow.rewalks == 8);
    CHECK(shadow.runs == 2);
    CHECK(shadow.bytes == 0x2000);
}

TEST_CASE("D73 a run the host refuses stays unmapped: S_NOMEM, a MAPPING fault, retried by the next INVALIDATE") {
    ShadowRig rig;
    MockIommuBackend& backend = rig.backend();
    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    rig.h.post_event_buffer();
    backend.set_budget(1);
    rig.tables.map(0x1000, kRam + 0x1000);
    rig.tables.map(0x3000, kRam + 0x8000, 3, support::kDescAf | support::kDescReadOnly);
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x1000, 3)) == S(Status::NoMem));
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x1000, 0x1fff, kRam + 0x1000, kRW)});
    auto event = rig.h.next_event();
    REQUIRE(event);
    CHECK(le32toh(event->fault.endpoint) == 10);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK(le64toh(event->fault.address) == 0x3000);
    CHECK(le32toh(event->fault.flags) == (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(rig.shadow(5).refusals == 1);
    CHECK(rig.h.stats().refusals_reported == 1);

    backend.set_budget(8);
    REQUIRE(rig.h.invalidate(5, invalidate_range(0x3000, 1)) == S(Status::Ok));
    CHECK(rig.host(10).size() == 2);
    CHECK(backend.violations() == 0);
}

TEST_CASE("D73 a table that does not fit the host fails the attach: S_NOMEM, the endpoint blocked, nothing mapped") {
    ShadowRig rig;
    MockIommuBackend& backend = rig.backend();
    for (std::uint64_t i = 0; i < 4; ++i) rig.tables.map(0x1000 + i * 0x2000, kRam + i * 0x1000);
    backend.set_budget(2);
    CHECK(rig.h.attach_table(10, 5, rig.fields()) == S(Status::NoMem));
    const auto* state = backend.state(10);
    REQUIRE(state);
    CHECK(state->mode == MockIommuBackend::Mode::Blocked);
    CHECK(state->mappings.empty());
    CHECK_FALSE(rig.h.iommu->endpoint_stats(10)->domain);
    CHECK_FALSE(rig.h.iommu->domain_stats(5));
    CHECK(rig.h.iommu->stats().live_mappings == 0);
    // With an emulated member the domain lives on, without shadow.
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.h.attach(10, 5) == S(Status::NoMem));
    CHECK(rig.h.iommu->domain_stats(5)->live_mappings == 0);
    CHECK_FALSE(rig.h.iommu->domain_stats(5)->shadowed);
    CHECK(rig.h.gpa_of(1, 0x3000) == kRam + 0x1000);
    CHECK(backend.violations() == 0);
}

TEST_CASE("D74 a re-walk past its read budget answers S_NOMEM and unmaps what it did not reach") {
    // A whole walk of a 4K, 48-bit table with one leaf reads four tables of 512 slots.
    iommu::Limits limits;
    limits.shadow_walk_reads = 4 * 512;
    ShadowRig rig(limits);
    MockIommuBackend& backend = rig.backend();
    rig.tables.map(0x1000, kRam + 0x1000);
    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.shadow(5).walk_reads == 4 * 512);
    // A leaf under the second level-0 slot, in the last slot of its level-3 table: a range
    // INVALIDATE reads four slots, a whole-domain one runs out of reads before reaching it.
    const std::uint64_t far = 0x80'0000'0000 + 511 * 0x1000;
    rig.tables.map(far, kRam + 0x2000);
    REQUIRE(rig.h.invalidate(5, invalidate_range(far, 1)) == S(Status::Ok));
    REQUIRE(rig.host(10).size() == 2);
    CHECK(rig.h.invalidate(5) == S(Status::NoMem));
    CHECK(rig.shadow(5).walks_cut == 1);
    CHECK(rig.host(10) == std::vector<iommu::Mapping>{run(0x1000, 0x1fff, kRam + 0x1000, kRW)});
    // The whole 48-bit range by RANGE costs the same.
    CHECK(rig.h.invalidate(5, invalidate_range(0, std::uint64_t{1} << 36)) == S(Status::NoMem));
    CHECK(backend.violations() == 0);
}

TEST_CASE("D75 DETACH, device reset and VM reset leave no host entry; emulated members keep translating") {
    ShadowRig rig;
    MockIommuBackend& backend = rig.backend();
    rig.tables.map(0x1000, kRam + 0x1000);
    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    REQUIRE(rig.h.attach(1, 5) == S(Status::Ok));
    REQUIRE(rig.host(10).size() == 1);
    REQUIRE(rig.h.detach(10, 5) == S(Status::Ok));
    CHECK(rig.host(10).empty());
    CHECK(rig.h.iommu->domain_stats(5)->live_mappings == 0);
    CHECK(rig.h.iommu->stats().live_mappings == 0);
    CHECK(rig.h.gpa_of(1, 0x1000) == kRam + 0x1000);
    // Invalidating a domain without external endpoints maps nothing anywhere.
    REQUIRE(rig.h.invalidate(5) == S(Status::Ok));
    CHECK(rig.h.iommu->domain_stats(5)->live_mappings == 0);

    REQUIRE(rig.h.attach(10, 5) == S(Status::Ok));
    REQUIRE(rig.host(10).size() == 1);
    REQUIRE(rig.h.start());  // device reset, then a new driver
    CHECK(rig.host(10).empty());
    CHECK(rig.h.iommu->stats().live_mappings == 0);

    REQUIRE(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    REQUIRE(rig.host(10).size() == 1);
    rig.h.iommu->reset();  // what a VM reset does to the model
    CHECK(rig.host(10).empty());
    CHECK(backend.violations() == 0);
}
