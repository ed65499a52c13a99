// The stage-1 walker (iommu/stage1_walker.cpp) against hand-built tables: every granule and start
// level, pages and blocks, permissions, the access flag, T0SZ edges, hostile table addresses and
// reserved encodings (iommu/page_tables.md, "The walk"; CONFORMANCE.md D62, D70).
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "iommu/stage1_walker.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/stage1_tables.hpp"

using iommu::Stage1Config;
using iommu::WalkError;
using support::FakeGuestRam;
using support::Stage1Tables;

namespace {

constexpr std::uint64_t kRamBase = FakeGuestRam::kDefaultBase;  // 0x4000'0000: 1 GiB aligned

Stage1Config config_for(const Stage1Tables& tables, unsigned ips = 5, std::uint64_t extra = 0) {
    auto config = iommu::decode_stage1(tables.tcr(ips, extra), tables.root());
    REQUIRE(config.has_value());
    return *config;
}

struct Granule {
    unsigned shift;
    const char* name;
};
constexpr Granule kGranules[] = {{12, "4K"}, {14, "16K"}, {16, "64K"}};

}  // namespace

TEST_CASE("D70 decode_stage1: the start level follows from the granule and T0SZ, as io-pgtable computes it") {
    struct Case {
        unsigned granule, input_bits, start_level;
    };
    const Case cases[] = {{12, 48, 0}, {12, 39, 1}, {12, 31, 1}, {12, 30, 2}, {12, 25, 2},
                          {14, 48, 0}, {14, 47, 1}, {14, 36, 2}, {14, 26, 2}, {14, 25, 3},
                          {16, 48, 1}, {16, 43, 1}, {16, 42, 2}, {16, 29, 3}, {16, 25, 3}};
    FakeGuestRam ram(kRamBase, 4 << 20);
    for (const Case& c : cases) {
        CAPTURE(c.granule);
        CAPTURE(c.input_bits);
        Stage1Tables tables(ram, c.granule, c.input_bits);
        CHECK(tables.start_level() == c.start_level);
        const Stage1Config config = config_for(tables);
        CHECK(config.start_level == c.start_level);
        CHECK(config.granule_shift == c.granule);
        CHECK(config.input_bits == c.input_bits);
        CHECK(config.output_bits == 48);
        CHECK(config.root == tables.root());
    }
}

TEST_CASE("D62 decode_stage1 refuses what page_tables.md's ATTACH_TABLE table refuses, and ignores the rest") {
    FakeGuestRam ram(kRamBase, 1 << 20);
    Stage1Tables tables(ram, 12, 48);
    const std::uint64_t tcr = tables.tcr();
    const std::uint64_t ttbr = tables.root();
    CHECK(iommu::decode_stage1(tcr, ttbr));
    // T0SZ 16..39 only.
    CHECK_FALSE(iommu::decode_stage1((tcr & ~0x3fULL) | 15, ttbr));
    CHECK_FALSE(iommu::decode_stage1((tcr & ~0x3fULL) | 40, ttbr));
    CHECK_FALSE(iommu::decode_stage1(tcr & ~0x3fULL, ttbr));
    // TG0 0b11 is reserved.
    CHECK_FALSE(iommu::decode_stage1(tcr | (3ULL << 14), ttbr));
    // IPS 6 (52 bits) and 7 are refused; 0..5 give 32..48 bits.
    CHECK_FALSE(iommu::decode_stage1(tables.tcr(6), ttbr));
    CHECK_FALSE(iommu::decode_stage1(tables.tcr(7), ttbr));
    const unsigned ips_bits[] = {32, 36, 40, 42, 44, 48};
    for (unsigned ips = 0; ips < 6; ++ips)
        CHECK(iommu::decode_stage1(tables.tcr(ips), ttbr)->output_bits == ips_bits[ips]);
    // HA, HD, TBI0 must be 0.
    for (unsigned bit : {37u, 39u, 40u}) CHECK_FALSE(iommu::decode_stage1(tcr | (1ULL << bit), ttbr));
    // EPD0 and HPD0 are read; other bits (TTBR1's half, IRGN/ORGN/SH, AS) are ignored.
    CHECK(iommu::decode_stage1(tcr | (1ULL << 7), ttbr)->walks_disabled);
    CHECK_FALSE(iommu::decode_stage1(tcr | (1ULL << 41), ttbr)->hierarchical_permissions);
    CHECK(iommu::decode_stage1(tcr | (0xffffULL << 16) | (0x3fULL << 8) | (1ULL << 36), ttbr) ==
          iommu::decode_stage1(tcr, ttbr));
    // TTBR: CnP and [63:48] ignored; BADDR aligned to the root table and below 2^IPS.
    CHECK(iommu::decode_stage1(tcr, ttbr | 1 | (0xabcdULL << 48))->root == ttbr);
    CHECK_FALSE(iommu::decode_stage1(tcr, ttbr + 8));
    CHECK_FALSE(iommu::decode_stage1(tables.tcr(0), 0x1'0000'0000ULL));
    CHECK(iommu::decode_stage1(tables.tcr(1), 0x1'0000'0000ULL));
    // A 16K, 48-bit root has two entries: 16-byte alignment is enough.
    Stage1Tables small(ram, 14, 48);
    CHECK(iommu::decode_stage1(small.tcr(), small.root() + 16));
    CHECK_FALSE(iommu::decode_stage1(small.tcr(), small.root() + 8));
}

TEST_CASE("D70 pages translate at level 3 for every granule and input size; neighbours fault") {
    for (const Granule& g : kGranules) {
        for (unsigned input_bits : {25u, 32u, 39u, 40u, 48u}) {
            CAPTURE(g.name);
            CAPTURE(input_bits);
            FakeGuestRam ram(kRamBase, 4 << 20);
            Stage1Tables tables(ram, g.shift, input_bits);
            const Stage1Config config = config_for(tables);
            const std::uint64_t page = std::uint64_t{1} << g.shift;
            // The highest page of the input range, and one near the bottom.
            const std::uint64_t top = (std::uint64_t{1} << input_bits) - page;
            tables.map(top, 0x8765ULL << g.shift);
            tables.map(page, 0x1234ULL << g.shift);
            auto result = iommu::walk_stage1(config, ram.memory(), top + page - 1);
            REQUIRE(result.leaf);
            CHECK(result.level == 3);
            CHECK(result.leaf->iova_base == top);
            CHECK(result.leaf->gpa_base == 0x8765ULL << g.shift);
            CHECK(result.leaf->size_shift == g.shift);
            CHECK(result.leaf->writable);
            CHECK(result.leaf->global);
            CHECK(iommu::walk_stage1(config, ram.memory(), page + 5).leaf->gpa_base == 0x1234ULL << g.shift);
            // Unmapped neighbours, and the first address past T0SZ's range.
            CHECK(iommu::walk_stage1(config, ram.memory(), top - 1).error == WalkError::Invalid);
            CHECK(iommu::walk_stage1(config, ram.memory(), 0).error == WalkError::Invalid);
            const auto past = iommu::walk_stage1(config, ram.memory(), std::uint64_t{1} << input_bits);
            CHECK_FALSE(past.leaf);
            CHECK(past.error == WalkError::InputSize);
            CHECK(iommu::walk_stage1(config, ram.memory(), ~std::uint64_t{0}).error == WalkError::InputSize);
        }
    }
}

TEST_CASE("D70 blocks exist where the granule has them: 4K 1G and 2M, 16K 32M, 64K 512M") {
    struct Case {
        unsigned granule, level;
        bool allowed;
    };
    const Case cases[] = {{12, 0, false}, {12, 1, true}, {12, 2, true},  {14, 0, false},
                          {14, 1, false}, {14, 2, true}, {16, 1, false}, {16, 2, true}};
    for (const Case& c : cases) {
        CAPTURE(c.granule);
        CAPTURE(c.level);
        FakeGuestRam ram(kRamBase, 4 << 20);
        Stage1Tables tables(ram, c.granule, 48);
        const Stage1Config config = config_for(tables);
        const unsigned shift = tables.shift_of(c.level);
        const std::uint64_t size = std::uint64_t{1} << shift;
        const std::uint64_t iova = size, gpa = size;  // entry 1 of its table; gpa block-aligned, below 2^48
        tables.map(iova, gpa, c.level);
        const auto result = iommu::walk_stage1(config, ram.memory(), iova + size / 2 + 7);
        if (!c.allowed) {
            CHECK(result.error == WalkError::Invalid);
            CHECK(result.level == c.level);
            continue;
        }
        REQUIRE(result.leaf);
        CHECK(result.level == c.level);
        CHECK(result.leaf->iova_base == iova);
        CHECK(result.leaf->gpa_base == gpa);
        CHECK(result.leaf->size() == size);
        // Output address bits below the block size must be zero.
        tables.map(iova, gpa | (std::uint64_t{1} << c.granule), c.level);
        CHECK(iommu::walk_stage1(config, ram.memory(), iova).error == WalkError::Misaligned);
    }
}

TEST_CASE("D70 AP[2] refuses writes; APTable[1] refuses them below it unless HPD0; AF = 0 and nG") {
    FakeGuestRam ram(kRamBase, 4 << 20);
    Stage1Tables tables(ram, 12, 48);
    const Stage1Config config = config_for(tables);
    const Stage1Config hpd = config_for(tables, 5, iommu::tcr::kHpd0);
    tables.map(0x1000, 0x5000, 3, support::kDescAf | support::kDescReadOnly);
    tables.map(0x2000, 0x6000, 3, 0);  // AF clear
    tables.map(0x3000, 0x7000, 3, support::kDescAf | support::kDescNg);
    CHECK_FALSE(iommu::walk_stage1(config, ram.memory(), 0x1000).leaf->writable);
    const auto no_af = iommu::walk_stage1(config, ram.memory(), 0x2000);
    CHECK_FALSE(no_af.leaf);
    CHECK(no_af.error == WalkError::AccessFlag);
    const auto ng = iommu::walk_stage1(config, ram.memory(), 0x3000).leaf;
    CHECK_FALSE(ng->global);
    CHECK(ng->writable);

    // APTable[1] on the level-2 table descriptor above 0x3000.
    const std::uint64_t table_slot = tables.slot(0x3000, 2);
    ram.write_obj(table_slot, ram.read_obj<std::uint64_t>(table_slot) | support::kDescApTableNoWrite);
    CHECK_FALSE(iommu::walk_stage1(config, ram.memory(), 0x3000).leaf->writable);
    CHECK(iommu::walk_stage1(hpd, ram.memory(), 0x3000).leaf->writable);
    // EPD0: every walk faults.
    CHECK(iommu::walk_stage1(config_for(tables, 5, iommu::tcr::kEpd0), ram.memory(), 0x3000).error ==
          WalkError::WalksDisabled);
}

TEST_CASE("D70 hostile tables: pointers outside RAM, reserved encodings, addresses above IPS, loops") {
    for (const Granule& g : kGranules) {
        CAPTURE(g.name);
        FakeGuestRam ram(kRamBase, 4 << 20);
        Stage1Tables tables(ram, g.shift, 48);
        const Stage1Config config = config_for(tables);
        const std::uint64_t page = std::uint64_t{1} << g.shift;
        tables.map(page, 0x10 * page);
        REQUIRE(iommu::walk_stage1(config, ram.memory(), page).leaf);

        // A table descriptor pointing outside RAM (below it, and past its end).
        const unsigned level2 = 2;
        const std::uint64_t slot = tables.slot(page, level2);
        const std::uint64_t good = ram.read_obj<std::uint64_t>(slot);
        for (std::uint64_t outside : {std::uint64_t{0}, ram.end(), std::uint64_t{0xffff'ffff'0000ULL} & ~(page - 1)}) {
            ram.write_obj(slot, outside | 3);
            CHECK(iommu::walk_stage1(config, ram.memory(), page).error == WalkError::TableOutsideRam);
        }
        // Table address above IPS, or with bits below the granule set.
        ram.write_obj(slot, (std::uint64_t{1} << 48) | 3);
        CHECK(iommu::walk_stage1(config, ram.memory(), page).error == WalkError::AddressSize);
        ram.write_obj(slot, good | (1ULL << 51));
        CHECK(iommu::walk_stage1(config, ram.memory(), page).error == WalkError::AddressSize);
        if (g.shift > 12) {
            ram.write_obj(slot, good | (1ULL << 12));
            CHECK(iommu::walk_stage1(config, ram.memory(), page).error == WalkError::Misaligned);
        }
        ram.write_obj(slot, good);
        // Level 3: 0b01 is reserved; an output address above IPS faults.
        tables.set(page, 3, (0x10 * page) | 1 | support::kDescAf);
        CHECK(iommu::walk_stage1(config, ram.memory(), page).error == WalkError::Invalid);
        tables.map(page, 0x1'0000'0000ULL);
        CHECK(iommu::walk_stage1(config, ram.memory(), page).leaf);
        CHECK(iommu::walk_stage1(config_for(tables, 0), ram.memory(), page).error == WalkError::AddressSize);
        // A root outside RAM.
        Stage1Config lost = config;
        lost.root = ram.end();
        CHECK(iommu::walk_stage1(lost, ram.memory(), page).error == WalkError::TableOutsideRam);
        // A loop: the root's entry points back at the root, so every level reads the root again.
        // The walk still ends at level 3, never runs away.
        tables.set(page, tables.start_level(), tables.root() | 3);
        const auto looped = iommu::walk_stage1(config, ram.memory(), page);
        CHECK(looped.level == 3);
        CHECK_FALSE(looped.leaf);
    }
}

TEST_CASE("D61 ips_bits_covering picks the smallest IPS size that holds guest RAM") {
    CHECK(iommu::ips_bits_covering(0) == 32);
    CHECK(iommu::ips_bits_covering(0xffff'ffffULL) == 32);
    CHECK(iommu::ips_bits_covering(0x1'0000'0000ULL) == 36);
    CHECK(iommu::ips_bits_covering(0x3ff'ffff'ffffULL) == 42);
    CHECK(iommu::ips_bits_covering(~std::uint64_t{0}) == 48);
}

TEST_CASE("D74 scan_stage1 finds exactly the leaves walk_stage1 finds, in order, within its read budget") {
    for (const Granule& granule : kGranules) {
        CAPTURE(granule.name);
        for (unsigned seed = 1; seed <= 20; ++seed) {
            CAPTURE(seed);
            std::mt19937_64 rng(seed);
            FakeGuestRam ram(kRamBase, 16 << 20);
            const unsigned input_bits = 25 + static_cast<unsigned>(rng() % 24);
            Stage1Tables tables(ram, granule.shift, input_bits);
            const Stage1Config config = config_for(tables);
            // Random leaves (pages and blocks, any permission, some with AF = 0) in a few regions,
            // and hostile descriptors: a table pointer outside RAM, one back to the root (a loop),
            // a reserved level-3 encoding.
            const std::uint64_t input_last = (std::uint64_t{1} << input_bits) - 1;
            std::vector<std::uint64_t> probes;
            // Leaves first, then level-3 entries with the reserved encoding, then level-2 pointers
            // (tables.slot() would follow them to write below them).
            for (int pass = 0; pass < 3; ++pass) {
                for (int i = 0; i < (pass == 0 ? 40 : 4); ++i) {
                    const unsigned level = pass == 1 ? 3 : pass == 2 ? 2 : 3 - static_cast<unsigned>(rng() % 2);
                    const unsigned shift = tables.shift_of(level);
                    if (level < tables.start_level() || tables.start_level() > 2 || shift >= input_bits) continue;
                    const std::uint64_t iova = (rng() & input_last) & ~((std::uint64_t{1} << shift) - 1);
                    const std::uint64_t gpa = (kRamBase + (rng() % 8 << shift)) & ~((std::uint64_t{1} << shift) - 1);
                    const std::uint64_t attrs = (rng() % 5 == 0 ? 0 : support::kDescAf) |
                                                (rng() % 3 == 0 ? support::kDescReadOnly : 0) |
                                                (rng() % 4 == 0 ? support::kDescNg : 0);
                    if (pass == 0) tables.map(iova, gpa, level, attrs);
                    if (pass == 1) tables.set(iova, 3, gpa | support::kDescValid | support::kDescAf);
                    if (pass == 2)
                        tables.set(
                            iova, 2,
                            (rng() % 2 ? 0x7000'0000 : tables.root()) | support::kDescValid | support::kDescTable);
                    probes.push_back(iova);
                    probes.push_back(iova + (rng() % (std::uint64_t{1} << shift)));
                }
            }
            std::vector<iommu::Stage1Leaf> leaves;
            const iommu::LeafScan scan =
                iommu::scan_stage1(config, ram.memory(), 0, ~std::uint64_t{0}, 1u << 22,
                                   [&](const iommu::Stage1Leaf& leaf) { leaves.push_back(leaf); });
            REQUIRE(scan.complete);
            for (std::size_t i = 0; i < leaves.size(); ++i) {
                const auto walked = iommu::walk_stage1(config, ram.memory(), leaves[i].iova_base);
                REQUIRE(walked.leaf);
                CHECK(*walked.leaf == leaves[i]);
                if (i > 0) CHECK(leaves[i - 1].iova_base + leaves[i - 1].size() <= leaves[i].iova_base);
            }
            // Every address a walk translates lies in a leaf the scan found.
            for (std::uint64_t iova : probes) {
                const auto walked = iommu::walk_stage1(config, ram.memory(), iova);
                if (!walked.leaf) continue;
                const bool found = std::any_of(leaves.begin(), leaves.end(),
                                               [&](const iommu::Stage1Leaf& leaf) { return leaf == *walked.leaf; });
                CHECK(found);
            }
            // A budget cut: everything below `resume` was found, nothing at or above it.
            std::vector<iommu::Stage1Leaf> partial;
            const iommu::LeafScan cut =
                iommu::scan_stage1(config, ram.memory(), 0, ~std::uint64_t{0}, scan.reads / 2,
                                   [&](const iommu::Stage1Leaf& leaf) { partial.push_back(leaf); });
            if (scan.reads / 2 == 0) continue;
            CHECK_FALSE(cut.complete);
            CHECK(cut.reads == scan.reads / 2);
            for (const iommu::Stage1Leaf& leaf : partial) CHECK(leaf.iova_base + leaf.size() <= cut.resume);
            CHECK(std::count_if(leaves.begin(), leaves.end(), [&](const iommu::Stage1Leaf& leaf) {
                      return leaf.iova_base < cut.resume;
                  }) == static_cast<std::ptrdiff_t>(partial.size()));
        }
    }
}
