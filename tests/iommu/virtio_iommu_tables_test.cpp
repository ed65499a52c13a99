// Page-table handover through the fake driver (iommu/page_tables.md; CONFORMANCE.md D60-D69):
// negotiation, the TABLE_FORMAT PROBE property, ATTACH_TABLE and INVALIDATE field rules, domain
// modes, IOTLB invalidation and lifetime, and faults of table walks.
#include <doctest/doctest.h>

#include <endian.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "iommu/uapi/virtio_iommu_tables.h"
#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/stage1_tables.hpp"

using namespace viommu_test;

namespace {

constexpr std::uint64_t kTablesFeature = std::uint64_t{1} << LKVM_VIOMMU_F_ATTACH_TABLE;
constexpr std::uint32_t kRW = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE;
constexpr std::uint64_t kRam = support::FakeGuestRam::kDefaultBase;

Options tables_on() {
    Options options;
    options.config.tables = true;
    return options;
}

// A started harness with tables offered and accepted, and a 4K, 48-bit table in its RAM.
struct TableRig {
    explicit TableRig(Options options = tables_on(), unsigned granule = 12)
        : h(std::move(options)), tables(h.ram(), granule, 48) {
        REQUIRE(h.start());
        REQUIRE((h.driver->negotiated() & kTablesFeature) != 0);
    }
    TableFields fields(std::uint16_t asid = 1) const {
        return TableFields{LKVM_VIOMMU_FMT_ARM_LPAE_S1, asid, tables.tcr(), tables.root(), 0xff};
    }
    Harness h;
    support::Stage1Tables tables;
};

iommu::IotlbStats iotlb(Harness& h, std::uint32_t domain) {
    auto stats = h.iommu->domain_stats(domain);
    REQUIRE(stats.has_value());
    REQUIRE(stats->table);
    return stats->iotlb;
}

}  // namespace

TEST_CASE("D60 LKVM_VIOMMU_F_ATTACH_TABLE is offered only with tables=on; its requests are unknown until accepted") {
    Harness off;
    CHECK((off.driver->device_features() & kTablesFeature) == 0);
    REQUIRE(off.start());
    Reply reply = off.request(attach_table_req(1, 1, {}), 4);
    CHECK(reply.used == 0);  // CONFORMANCE.md D9: an unknown type
    CHECK(reply.untouched());

    Harness declined(tables_on());
    CHECK((declined.driver->device_features() & kTablesFeature) != 0);
    REQUIRE(declined.start(kAll & ~kTablesFeature));
    CHECK(declined.request(attach_table_req(1, 1, {}), 4).used == 0);
    CHECK(declined.request(invalidate_req(1, {}), 4).used == 0);
    CHECK(declined.stats().unanswered == 2);

    TableRig rig;
    CHECK(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.h.invalidate(5) == S(Status::Ok));
    CHECK(rig.h.stats().requests_by_type[LKVM_VIOMMU_T_ATTACH_TABLE] == 1);
    CHECK(rig.h.stats().requests_by_type[LKVM_VIOMMU_T_INVALIDATE] == 1);
}

TEST_CASE("D61 PROBE adds TABLE_FORMAT after RESV_MEM, only when accepted and only for endpoints that can use it") {
    auto backend = std::make_shared<iommu::testing::MockIommuBackend>();
    Options options = with_backend(backend);
    options.config.tables = true;
    options.endpoints[0].reserved = {{vmm::Iova{0x800'0000}, vmm::Iova{0x80f'ffff}, iommu::ResvKind::Msi}};
    TableRig rig(options);
    Reply reply = rig.h.probe(1);
    REQUIRE(reply.status() == S(Status::Ok));
    virtio_iommu_probe_resv_mem resv;
    std::memcpy(&resv, reply.writable.data(), sizeof resv);
    CHECK(le16toh(resv.head.type) == VIRTIO_IOMMU_PROBE_T_RESV_MEM);
    lkvm_viommu_probe_table_format format;
    std::memcpy(&format, reply.writable.data() + sizeof resv, sizeof format);
    CHECK(le16toh(format.head.type) == LKVM_VIOMMU_PROBE_T_TABLE_FORMAT);
    CHECK(le16toh(format.head.length) == 28);
    CHECK(le16toh(format.format) == LKVM_VIOMMU_FMT_ARM_LPAE_S1);
    CHECK(format.asid_bits == 16);
    CHECK(format.input_bits == 48);
    CHECK(format.output_bits == 32);  // the fake RAM ends below 4 GiB
    CHECK(le64toh(format.pgsize_bitmap) ==
          ((1ULL << 12) | (1ULL << 21) | (1ULL << 30) | (1ULL << 14) | (1ULL << 25) | (1ULL << 16) | (1ULL << 29)));
    CHECK(le64toh(format.flags) == 0);
    // Then the NONE terminator.
    CHECK(reply.writable[sizeof resv + sizeof format] == 0);
    CHECK(reply.writable[sizeof resv + sizeof format + 1] == 0);

    // Endpoint 10 has an external IOMMU (VFIO): its table is shadowed (CONFORMANCE.md D71).
    Reply external = rig.h.probe(10);
    REQUIRE(external.status() == S(Status::Ok));
    std::memcpy(&format, external.writable.data(), sizeof format);
    CHECK(le16toh(format.head.type) == LKVM_VIOMMU_PROBE_T_TABLE_FORMAT);
    CHECK(le64toh(format.flags) == LKVM_VIOMMU_TABLE_F_SHADOW);

    // A driver that did not accept the feature gets only RESV_MEM.
    Harness declined(options);
    REQUIRE(declined.start(kAll & ~kTablesFeature));
    Reply plain = declined.probe(1);
    REQUIRE(plain.status() == S(Status::Ok));
    CHECK(plain.writable[sizeof resv] == 0);
}

TEST_CASE("D62 ATTACH_TABLE fields: format, TCR, TTBR per page_tables.md; unknown endpoint, domain range") {
    Options options = tables_on();
    options.config.domain_first = 1;
    options.config.domain_last = 100;
    TableRig rig(options);
    const TableFields good = rig.fields();
    auto with = [&](auto change) {
        TableFields f = good;
        change(f);
        return rig.h.attach_table(1, 5, f);
    };
    CHECK(with([](TableFields& f) { f.format = 0; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.format = 2; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr = (f.tcr & ~0x3fULL) | 15; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr = (f.tcr & ~0x3fULL) | 40; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr |= 3ULL << 14; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr |= 6ULL << 32; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr |= iommu::tcr::kHa; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr |= iommu::tcr::kHd; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.tcr |= iommu::tcr::kTbi0; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) { f.ttbr += 8; }) == S(Status::Inval));
    CHECK(with([](TableFields& f) {  // a root above the output size (IPS 32 bits)
              f.tcr &= ~(7ULL << 32);
              f.ttbr |= 1ULL << 40;
          }) == S(Status::Inval));
    CHECK_FALSE(rig.h.iommu->endpoint_stats(1)->domain);
    CHECK(rig.h.attach_table(99, 5, good) == S(Status::NoEnt));
    CHECK(rig.h.attach_table(1, 0, good) == S(Status::Range));
    CHECK(rig.h.attach_table(1, 101, good) == S(Status::Range));
    // Ignored: TTBR's CnP and ASID field, MAIR, reserved TCR bits.
    CHECK(with([](TableFields& f) { f.ttbr |= 1 | (0x77ULL << 48); }) == S(Status::Ok));
    CHECK(rig.h.iommu->endpoint_stats(1)->domain == 5u);
}

TEST_CASE("D63 endpoints with an external IOMMU use tables too: ATTACH_TABLE and ATTACH to a table domain") {
    auto backend = std::make_shared<iommu::testing::MockIommuBackend>();
    Options options = with_backend(backend);
    options.config.tables = true;
    TableRig rig(options);
    CHECK(rig.h.attach_table(10, 5, rig.fields()) == S(Status::Ok));
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.h.attach(10, 6) == S(Status::Ok));  // a MAP-mode domain is fine
    CHECK(rig.h.attach(10, 5) == S(Status::Ok));
    CHECK(rig.h.iommu->endpoint_stats(10)->domain == 5u);
    CHECK(backend->violations() == 0);
}

TEST_CASE("D64 a domain has one mode and one table: ATTACH_TABLE on MAP domains or other tables is refused") {
    TableRig rig;
    REQUIRE(rig.h.attach(1, 4) == S(Status::Ok));
    CHECK(rig.h.attach_table(2, 4, rig.fields()) == S(Status::Inval));  // a MAP-mode domain
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));   // leaves domain 4 (which dies)
    CHECK_FALSE(rig.h.iommu->domain_stats(4));
    CHECK(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));  // again: already there
    for (auto change :
         {+[](TableFields& f) { f.asid = 2; }, +[](TableFields& f) { f.mair = 0; },
          +[](TableFields& f) { f.tcr |= iommu::tcr::kHpd0; }, +[](TableFields& f) { f.ttbr += 0x1000; }}) {
        TableFields other = rig.fields();
        change(other);
        CHECK(rig.h.attach_table(2, 5, other) == S(Status::Inval));
    }
    CHECK(rig.h.attach_table(2, 5, rig.fields()) == S(Status::Ok));  // the same table: shares it
    CHECK(rig.h.iommu->domain_stats(5)->endpoints == std::vector<iommu::EndpointId>{1, 2});
    // Plain ATTACH joins a table-mode domain too; with F_BYPASS it does not (D19).
    REQUIRE(rig.h.detach(2, 5) == S(Status::Ok));
    CHECK(rig.h.attach(2, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Inval));
    CHECK(rig.h.attach(2, 5) == S(Status::Ok));
    // A bypass domain is no table either.
    REQUIRE(rig.h.attach(2, 6, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK(rig.h.attach_table(1, 6, rig.fields()) == S(Status::Inval));
}

TEST_CASE("D65 MAP and UNMAP on a table-mode domain answer S_INVAL") {
    TableRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.h.map(5, 0, kPage - 1, kRam, kRW) == S(Status::Inval));
    CHECK(rig.h.unmap(5, 0, kPage - 1) == S(Status::Inval));
    CHECK(rig.h.iommu->domain_stats(5)->live_mappings == 0);
}

TEST_CASE("D66 INVALIDATE fields per page_tables.md; MAP-mode domains S_INVAL, missing ones S_NOENT") {
    Options options = tables_on();
    options.config.domain_last = 100;
    TableRig rig(options);
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    REQUIRE(rig.h.attach(2, 6) == S(Status::Ok));
    auto with = [&](auto change) {
        InvalidateFields f;
        change(f);
        return rig.h.invalidate(5, f);
    };
    CHECK(with([](InvalidateFields&) {}) == S(Status::Ok));
    CHECK(with([](InvalidateFields& f) { f.scope = 0; }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.scope = LKVM_VIOMMU_INV_DOMAIN | LKVM_VIOMMU_INV_RANGE; }) ==
          S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.scope = 8; }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.caches = 0; }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.caches |= 2; }) == S(Status::Unsupp));
    CHECK(with([](InvalidateFields& f) { f.flags = LKVM_VIOMMU_INV_F_PASID; }) == S(Status::Unsupp));
    CHECK(with([](InvalidateFields& f) { f.flags = 8; }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.flags = LKVM_VIOMMU_INV_F_LEAF; }) == S(Status::Ok));
    CHECK(with([](InvalidateFields& f) { f.pasid = 1; }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) { f.scope = LKVM_VIOMMU_INV_ASID; }) == S(Status::Inval));  // no F_ASID
    CHECK(with([](InvalidateFields& f) {
              f.scope = LKVM_VIOMMU_INV_ASID;
              f.flags = LKVM_VIOMMU_INV_F_ASID;
              f.asid = 0x10000;
          }) == S(Status::Inval));
    CHECK(with([](InvalidateFields& f) {
              f.scope = LKVM_VIOMMU_INV_ASID;
              f.flags = LKVM_VIOMMU_INV_F_ASID;
              f.asid = 7;
          }) == S(Status::Ok));
    // RANGE: granule 12..48, aligned start, at least a page, no wrap.
    CHECK(rig.h.invalidate(5, invalidate_range(0x1000, 1)) == S(Status::Ok));
    CHECK(rig.h.invalidate(5, invalidate_range(0x1000, 1, 11)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0, 1, 48)) == S(Status::Ok));
    CHECK(rig.h.invalidate(5, invalidate_range(0, 1, 49)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0x1800, 1)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0x1000, 0)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0, std::uint64_t{1} << 52)) == S(Status::Ok));  // ends at 2^64 - 1
    CHECK(rig.h.invalidate(5, invalidate_range(0x1000, std::uint64_t{1} << 52)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0, std::uint64_t{1} << 53)) == S(Status::Inval));
    CHECK(rig.h.invalidate(5, invalidate_range(0, ~std::uint64_t{0}, 40)) == S(Status::Inval));
    // Domains.
    CHECK(rig.h.invalidate(6) == S(Status::Inval));
    CHECK(rig.h.invalidate(7) == S(Status::NoEnt));
    CHECK(rig.h.invalidate(101) == S(Status::Range));
    const auto stats = iotlb(rig.h, 5);
    CHECK(stats.invalidations_domain == 2);
    CHECK(stats.invalidations_asid == 1);
    CHECK(stats.invalidations_range == 3);
}

TEST_CASE("D67 a changed table is seen after INVALIDATE (by domain, ASID or range), maybe before") {
    TableRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields(9)) == S(Status::Ok));
    const std::uint64_t a = kRam + 0x10'0000, b = kRam + 0x20'0000;
    rig.tables.map(0x1000, a);
    rig.tables.map(0x2000, a, 3, support::kDescAf | support::kDescNg);
    CHECK(rig.h.gpa_of(1, 0x1010) == a + 0x10);
    CHECK(rig.h.gpa_of(1, 0x2010) == a + 0x10);
    // Changed without INVALIDATE: the cached (old) translation is still used.
    rig.tables.map(0x1000, b);
    rig.tables.map(0x2000, b, 3, support::kDescAf | support::kDescNg);
    CHECK(rig.h.gpa_of(1, 0x1010) == a + 0x10);
    CHECK(iotlb(rig.h, 5).hits == 1);

    // By ASID: another ASID drops nothing; ours drops the non-global entry only.
    InvalidateFields other_asid;
    other_asid.scope = LKVM_VIOMMU_INV_ASID;
    other_asid.flags = LKVM_VIOMMU_INV_F_ASID;
    other_asid.asid = 8;
    REQUIRE(rig.h.invalidate(5, other_asid) == S(Status::Ok));
    CHECK(rig.h.gpa_of(1, 0x2010) == a + 0x10);
    InvalidateFields our_asid = other_asid;
    our_asid.asid = 9;
    REQUIRE(rig.h.invalidate(5, our_asid) == S(Status::Ok));
    CHECK(rig.h.gpa_of(1, 0x2010) == b + 0x10);
    CHECK(rig.h.gpa_of(1, 0x1010) == a + 0x10);

    // By range (with another ASID: global entries still go, as Arm's TLBI VAE1).
    InvalidateFields range = invalidate_range(0x1000, 1);
    range.flags = LKVM_VIOMMU_INV_F_ASID;
    range.asid = 3;
    REQUIRE(rig.h.invalidate(5, range) == S(Status::Ok));
    CHECK(rig.h.gpa_of(1, 0x1010) == b + 0x10);

    // Unmapped in the table, then the whole domain: the access faults.
    rig.tables.unmap(0x1000);
    CHECK(rig.h.gpa_of(1, 0x1010) == b + 0x10);
    REQUIRE(rig.h.invalidate(5) == S(Status::Ok));
    CHECK_FALSE(rig.h.gpa_of(1, 0x1010));
    CHECK(iotlb(rig.h, 5).entries == 0);
}

TEST_CASE("D68 the last DETACH and a device reset leave no cached translation behind") {
    TableRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    rig.tables.map(0x1000, kRam);
    REQUIRE(rig.h.gpa_of(1, 0x1000) == kRam);
    CHECK(iotlb(rig.h, 5).entries == 1);
    rig.tables.map(0x1000, kRam + 0x1000);  // no INVALIDATE
    REQUIRE(rig.h.detach(1, 5) == S(Status::Ok));
    CHECK_FALSE(rig.h.iommu->domain_stats(5));
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(iotlb(rig.h, 5).entries == 0);
    CHECK(rig.h.gpa_of(1, 0x1000) == kRam + 0x1000);

    rig.tables.map(0x1000, kRam + 0x2000);
    REQUIRE(rig.h.start());  // device reset, then a new driver
    CHECK_FALSE(rig.h.iommu->domain_stats(5));
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    CHECK(rig.h.gpa_of(1, 0x1000) == kRam + 0x2000);
}

TEST_CASE("D69 a walk that faults fails the access and reports MAPPING with the address and direction") {
    TableRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    rig.tables.map(0x1000, kRam, 3, support::kDescAf | support::kDescReadOnly);
    rig.tables.map(0x2000, kRam + 0x1000);
    rig.h.post_event_buffer();
    rig.h.post_event_buffer();
    rig.h.post_event_buffer();
    // Reads work; a write to the read-only page faults (no walk needed: the leaf is cached).
    CHECK(rig.h.gpa_of(1, 0x1000) == kRam);
    CHECK_FALSE(rig.h.translate(1, 0x1ff0, 0x20, Access::Write));
    auto event = rig.h.next_event();
    REQUIRE(event);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK(le32toh(event->fault.flags) == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(le64toh(event->fault.address) == 0x1ff0);
    CHECK(le32toh(event->fault.endpoint) == 1);
    // A read that runs off the mapped pages faults at the first unmapped byte, delivering nothing.
    CHECK_FALSE(rig.h.translate(1, 0x2ff0, 0x20, Access::Read));
    event = rig.h.next_event();
    REQUIRE(event);
    CHECK(le32toh(event->fault.flags) == (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(le64toh(event->fault.address) == 0x3000);
    // An access over two mapped pages whose GPAs are adjacent is one fragment.
    const auto pieces = rig.h.translate(1, 0x1ff0, 0x20, Access::Read);
    REQUIRE(pieces);
    CHECK(*pieces == std::vector<std::pair<std::uint64_t, std::uint64_t>>{{kRam + 0xff0, 0x20}});
    const auto stats = iotlb(rig.h, 5);
    CHECK(stats.walk_faults == 1);
    CHECK(rig.h.iommu->domain_stats(5)->faults == 2);
}

// ---- differential: the device against a plain model of what a guest may see -----------------------

namespace {

using iommu::InvalidateScope;

// A leaf as the model knows it, for one tracked page: where the page goes, and the extent of the
// cache entry it would be (a 4K page or a 2M block).
struct ModelLeaf {
    std::uint64_t page_gpa;
    bool writable, global;
    std::uint64_t base;
    unsigned shift;
    bool operator==(const ModelLeaf&) const = default;
};

// IOVA layout: kSlots 2 MiB slots, each unmapped, a 2 MiB block or a level-3 table; a few pages of
// each are tracked. The model keeps the table's current state and, per tracked page, every leaf
// the IOTLB may hold (anything walked since the last INVALIDATE that named it).
class TableModel {
public:
    static constexpr unsigned kSlots = 4;
    static constexpr std::uint64_t kIovaBase = 0x1'0000'0000ULL;
    static constexpr std::array<unsigned, 6> kTrackedPages{0, 1, 2, 3, 255, 511};
    static constexpr std::size_t kTracked = kSlots * kTrackedPages.size();

    static std::uint64_t slot_iova(unsigned slot) { return kIovaBase + (std::uint64_t{slot} << 21); }
    static std::uint64_t page_iova(std::size_t t) {
        return slot_iova(static_cast<unsigned>(t / kTrackedPages.size())) +
               (std::uint64_t{kTrackedPages[t % kTrackedPages.size()]} << 12);
    }

    explicit TableModel(support::Stage1Tables& tables) : tables_(tables) {}

    void set_block(unsigned slot, std::uint64_t gpa, std::uint64_t attrs) {
        tables_.map(slot_iova(slot), gpa, 2, support::kDescAf | attrs);
        slots_[slot] = Slot{Kind::Block, gpa, attrs, {}};
    }
    void clear_slot(unsigned slot) {
        tables_.unmap(slot_iova(slot), 2);
        slots_[slot] = Slot{};
    }
    void map_page(std::size_t t, std::uint64_t gpa, std::uint64_t attrs) {
        Slot& slot = slots_[t / kTrackedPages.size()];
        // Stage1Tables puts a fresh (empty) level-3 table under a slot that had none.
        if (slot.kind != Kind::Table) slot = Slot{Kind::Table, 0, 0, {}};
        tables_.map(page_iova(t), gpa, 3, support::kDescAf | attrs);
        slot.pages[t % kTrackedPages.size()] = std::pair{gpa, attrs};
    }
    void unmap_page(std::size_t t) {
        Slot& slot = slots_[t / kTrackedPages.size()];
        if (slot.kind != Kind::Table) return;
        tables_.unmap(page_iova(t), 3);
        slot.pages[t % kTrackedPages.size()].reset();
    }

    std::optional<ModelLeaf> current(std::size_t t) const {
        const Slot& slot = slots_[t / kTrackedPages.size()];
        const std::uint64_t iova = page_iova(t);
        if (slot.kind == Kind::Block) {
            const std::uint64_t base = slot_iova(static_cast<unsigned>(t / kTrackedPages.size()));
            return ModelLeaf{slot.block_gpa + (iova - base), !(slot.attrs & support::kDescReadOnly),
                             !(slot.attrs & support::kDescNg), base, 21};
        }
        if (slot.kind == Kind::Table) {
            const auto& page = slot.pages[t % kTrackedPages.size()];
            if (page)
                return ModelLeaf{page->first, !(page->second & support::kDescReadOnly),
                                 !(page->second & support::kDescNg), iova, 12};
        }
        return std::nullopt;
    }

    // What a read or write of tracked page t at `offset` may see: a GPA, or a fault (nullopt).
    bool may_see(std::size_t t, std::uint64_t offset, Access access, std::optional<std::uint64_t> seen) const {
        auto outcome = [&](const ModelLeaf& leaf) -> std::optional<std::uint64_t> {
            if (access == Access::Write && !leaf.writable) return std::nullopt;
            return leaf.page_gpa + offset;
        };
        const std::optional<ModelLeaf> now = current(t);
        if (now ? outcome(*now) == seen : !seen) return true;
        for (const ModelLeaf& cached : cached_[t])
            if (outcome(cached) == seen) return true;
        return false;
    }
    // After an access to t: the leaf it walked may now be cached, for every tracked page it covers.
    void walked(std::size_t t) {
        const std::optional<ModelLeaf> leaf = current(t);
        if (!leaf) return;
        for (std::size_t u = 0; u < kTracked; ++u) {
            const std::uint64_t iova = page_iova(u);
            if (iova < leaf->base || iova - leaf->base >= (std::uint64_t{1} << leaf->shift)) continue;
            ModelLeaf derived = *leaf;
            derived.page_gpa = leaf->page_gpa - (page_iova(t) - leaf->base) + (iova - leaf->base);
            auto& set = cached_[u];
            if (std::find(set.begin(), set.end(), derived) == set.end()) set.push_back(derived);
        }
    }
    // INVALIDATE: drop the cached leaves it names (page_tables.md, "INVALIDATE").
    void invalidate(InvalidateScope scope, bool asid_given, bool asid_ours, std::uint64_t first, std::uint64_t last) {
        for (auto& set : cached_) {
            std::erase_if(set, [&](const ModelLeaf& leaf) {
                switch (scope) {
                    case InvalidateScope::Domain: return true;
                    case InvalidateScope::Asid: return asid_ours && !leaf.global;
                    case InvalidateScope::Range: {
                        const std::uint64_t leaf_last = leaf.base + ((std::uint64_t{1} << leaf.shift) - 1);
                        const bool overlaps = leaf.base <= last && first <= leaf_last;
                        return overlaps && (leaf.global || !asid_given || asid_ours);
                    }
                }
                return false;
            });
        }
    }

private:
    enum class Kind { None, Block, Table };
    struct Slot {
        Kind kind = Kind::None;
        std::uint64_t block_gpa = 0;
        std::uint64_t attrs = 0;
        std::array<std::optional<std::pair<std::uint64_t, std::uint64_t>>, kTrackedPages.size()> pages{};
    };
    support::Stage1Tables& tables_;
    std::array<Slot, kSlots> slots_{};
    std::array<std::vector<ModelLeaf>, kTracked> cached_{};
};

}  // namespace

TEST_CASE("D67 differential: random table changes, accesses and INVALIDATEs agree with the model") {
    for (std::uint64_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
        CAPTURE(seed);
        Options options = tables_on();
        options.ram_size = 16 << 20;
        TableRig rig(options);
        constexpr std::uint16_t kAsid = 42;
        REQUIRE(rig.h.attach_table(1, 5, rig.fields(kAsid)) == S(Status::Ok));
        TableModel model(rig.tables);
        std::mt19937_64 random(seed);
        auto pick = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(random); };
        auto attrs = [&] {
            return (pick(4) == 0 ? support::kDescReadOnly : 0) | (pick(2) == 0 ? support::kDescNg : 0);
        };
        std::size_t mismatches = 0, translations = 0;
        for (int op = 0; op < 2500 && mismatches == 0; ++op) {
            const std::uint64_t choice = pick(100);
            if (choice < 40) {  // an access of part of a tracked page
                const std::size_t t = pick(TableModel::kTracked);
                const std::uint64_t offset = pick(kPage);
                const std::uint64_t length = 1 + pick(kPage - offset);
                const Access access = pick(2) ? Access::Write : Access::Read;
                const auto pieces = rig.h.translate(1, TableModel::page_iova(t) + offset, length, access);
                std::optional<std::uint64_t> seen;
                if (pieces) seen = pieces->front().first;
                ++translations;
                if (!model.may_see(t, offset, access, seen)) {
                    ++mismatches;
                    CAPTURE(op);
                    CAPTURE(t);
                    FAIL_CHECK("the device translated to something the model does not allow");
                }
                model.walked(t);
            } else if (choice < 60) {
                const std::uint64_t gpa = kRam + (pick(16 << 8) << 12);
                model.map_page(pick(TableModel::kTracked), gpa, attrs());
            } else if (choice < 68) {
                model.unmap_page(pick(TableModel::kTracked));
            } else if (choice < 73) {
                model.set_block(static_cast<unsigned>(pick(TableModel::kSlots)), kRam + (pick(8) << 21), attrs());
            } else if (choice < 76) {
                model.clear_slot(static_cast<unsigned>(pick(TableModel::kSlots)));
            } else if (choice < 82) {
                REQUIRE(rig.h.invalidate(5) == S(Status::Ok));
                model.invalidate(InvalidateScope::Domain, false, false, 0, 0);
            } else if (choice < 88) {
                InvalidateFields f;
                f.scope = LKVM_VIOMMU_INV_ASID;
                f.flags = LKVM_VIOMMU_INV_F_ASID;
                f.asid = pick(2) ? kAsid : kAsid + 1;
                REQUIRE(rig.h.invalidate(5, f) == S(Status::Ok));
                model.invalidate(InvalidateScope::Asid, true, f.asid == kAsid, 0, 0);
            } else {
                const std::uint8_t granule = pick(4) == 0 ? 21 : 12;
                const std::uint64_t unit = std::uint64_t{1} << granule;
                const std::uint64_t start =
                    (TableModel::kIovaBase + pick(std::uint64_t{TableModel::kSlots} << 21)) & ~(unit - 1);
                InvalidateFields f = invalidate_range(start, 1 + pick(granule == 12 ? 600 : 2), granule);
                if (pick(2)) {
                    f.flags = LKVM_VIOMMU_INV_F_ASID;
                    f.asid = pick(2) ? kAsid : kAsid + 1;
                }
                REQUIRE(rig.h.invalidate(5, f) == S(Status::Ok));
                model.invalidate(InvalidateScope::Range, f.flags != 0, f.asid == kAsid, start,
                                 start + (f.nr_pages << granule) - 1);
            }
        }
        CHECK(mismatches == 0);
        CHECK(translations > 500);
        const auto stats = iotlb(rig.h, 5);
        CHECK(stats.hits > 0);  // the cache was exercised, not bypassed
        CHECK(stats.walks > 0);
    }
}

TEST_CASE("D67 device threads translate while the guest rewrites its table and INVALIDATEs") {
    // Two device threads fill the IOTLB under the shared lock while requests take it exclusively:
    // every access sees one of the GPAs its page ever had, and nothing breaks (ASan in make asan).
    TableRig rig;
    REQUIRE(rig.h.attach_table(1, 5, rig.fields()) == S(Status::Ok));
    constexpr std::uint64_t kPages = 16;
    auto gpa_for = [](std::uint64_t page, std::uint64_t generation) {
        return kRam + ((page * 4 + generation % 4) << 12);  // four GPAs per page, never another page's
    };
    for (std::uint64_t page = 0; page < kPages; ++page) rig.tables.map(page << 12, gpa_for(page, 0));
    const auto translator = rig.h.iommu->translator(1);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> wrong{0}, done{0};
    auto device = [&](std::uint64_t seed) {
        std::mt19937_64 random(seed);
        while (!stop.load()) {
            const std::uint64_t page = random() % kPages;
            Harness::Fragments fragments;
            if (translator->translate(vmm::Iova{page << 12}, 8, Access::Read, fragments)) {
                const std::uint64_t gpa = fragments.pieces.at(0).first;
                if (gpa < gpa_for(page, 0) || gpa > gpa_for(page, 3)) wrong.fetch_add(1);
            }
            done.fetch_add(1);
        }
    };
    std::thread first(device, 1), second(device, 2);
    while (done.load() < 2) std::this_thread::yield();  // translations run before the changes begin
    for (std::uint64_t generation = 1; generation < 300; ++generation) {
        const std::uint64_t page = generation % kPages;
        rig.tables.map(page << 12, gpa_for(page, generation));
        REQUIRE(rig.h.invalidate(5, generation % 3 ? invalidate_range(page << 12, 1) : InvalidateFields{}) ==
                S(Status::Ok));
        // After the INVALIDATE, the page's new GPA is what every translation sees.
        REQUIRE(rig.h.gpa_of(1, page << 12) == gpa_for(page, generation));
    }
    stop.store(true);
    first.join();
    second.join();
    CHECK(wrong.load() == 0);
}
