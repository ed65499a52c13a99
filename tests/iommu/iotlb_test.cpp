// iommu::Iotlb (iommu/iotlb.cpp): lookups of every leaf size, the capacity bound, invalidation by
// domain, ASID and range with Arm's global-entry rule, and the cost bound of a huge range
// (CONFORMANCE.md D66, D67).
#include "iommu/iotlb.hpp"

#include <doctest/doctest.h>

using iommu::Iotlb;
using iommu::Stage1Leaf;

namespace {

Stage1Leaf leaf(std::uint64_t iova, std::uint64_t gpa, unsigned shift, bool global = true, bool writable = true) {
    return Stage1Leaf{iova, gpa, static_cast<std::uint8_t>(shift), writable, global};
}

}  // namespace

TEST_CASE("Iotlb finds pages and blocks by any address inside them, and counts hits and misses") {
    Iotlb iotlb(12);
    CHECK_FALSE(iotlb.lookup(0x1000));
    iotlb.record_walk(leaf(0x1000, 0x8000, 12));
    iotlb.record_walk(leaf(0x20'0000, 0x40'0000, 21));
    iotlb.record_walk(leaf(0x4000'0000, 0x8000'0000, 30));
    CHECK(iotlb.lookup(0x1fff)->gpa_base == 0x8000);
    CHECK(iotlb.lookup(0x3f'ffff)->iova_base == 0x20'0000);
    CHECK(iotlb.lookup(0x7fff'ffff)->size_shift == 30);
    CHECK_FALSE(iotlb.lookup(0x2000));
    CHECK_FALSE(iotlb.lookup(0x8000'0000));
    iotlb.record_walk(std::nullopt);  // a faulting walk is counted, not cached
    const auto stats = iotlb.stats();
    CHECK(stats.hits == 3);
    CHECK(stats.misses == 3);
    CHECK(stats.walks == 4);
    CHECK(stats.walk_faults == 1);
    CHECK(stats.entries == 3);

    Iotlb sixteen(14), sixty_four(16);
    sixteen.record_walk(leaf(0x200'0000, 0, 25));
    CHECK(sixteen.lookup(0x3ff'ffff));
    sixty_four.record_walk(leaf(0x2000'0000, 0, 29));
    sixty_four.record_walk(leaf(0x1'0000, 0, 16));
    CHECK(sixty_four.lookup(0x3fff'ffff));
    CHECK(sixty_four.lookup(0x1'ffff));
}

TEST_CASE("Iotlb holds at most its capacity: a fill into a full IOTLB starts it over") {
    Iotlb iotlb(12, 4);
    for (std::uint64_t page = 0; page < 4; ++page) iotlb.record_walk(leaf(page << 12, page << 12, 12));
    CHECK(iotlb.stats().entries == 4);
    iotlb.record_walk(leaf(0x10'0000, 0, 12));
    const auto stats = iotlb.stats();
    CHECK(stats.entries == 1);
    CHECK(stats.capacity == 4);
    CHECK(stats.capacity_flushes == 1);
    CHECK(iotlb.lookup(0x10'0000));
    CHECK_FALSE(iotlb.lookup(0));
}

TEST_CASE("D67 Iotlb invalidation: domain, ASID (non-global only), range (overlap, global entries always)") {
    Iotlb iotlb(12);
    auto fill = [&] {
        iotlb.invalidate_domain();
        iotlb.record_walk(leaf(0x1000, 0, 12, true));
        iotlb.record_walk(leaf(0x2000, 0, 12, false));
        iotlb.record_walk(leaf(0x20'0000, 0, 21, true));   // 2 MiB block
        iotlb.record_walk(leaf(0x40'0000, 0, 21, false));  // 2 MiB block, nG
    };
    fill();
    iotlb.invalidate_asid(false);
    CHECK(iotlb.stats().entries == 4);
    iotlb.invalidate_asid(true);
    CHECK(iotlb.stats().entries == 2);
    CHECK(iotlb.lookup(0x1000));
    CHECK_FALSE(iotlb.lookup(0x2000));

    // A one-page range at the end of a block drops the block.
    fill();
    iotlb.invalidate_range(0x3f'f000, 0x3f'ffff, false, false);
    CHECK_FALSE(iotlb.lookup(0x20'0000));
    CHECK(iotlb.stats().entries == 3);
    // With another ASID: global entries in range go, non-global ones stay.
    fill();
    iotlb.invalidate_range(0x1000, 0x5f'ffff, true, false);
    CHECK_FALSE(iotlb.lookup(0x1000));
    CHECK_FALSE(iotlb.lookup(0x20'0000));
    CHECK(iotlb.lookup(0x2000));
    CHECK(iotlb.lookup(0x40'0000));
    // With ours: everything in range.
    iotlb.invalidate_range(0x1000, 0x5f'ffff, true, true);
    CHECK(iotlb.stats().entries == 0);
    const auto stats = iotlb.stats();
    CHECK(stats.invalidations_domain == 3);
    CHECK(stats.invalidations_asid == 2);
    CHECK(stats.invalidations_range == 3);
}

TEST_CASE("D66 a range of 2^52 pages costs what the IOTLB holds, not the pages it names") {
    // Were the range walked page by page, this would not finish.
    Iotlb iotlb(12);
    iotlb.record_walk(leaf(0x1000, 0, 12));
    iotlb.record_walk(leaf(0xffff'f000ULL << 16, 0, 12));
    iotlb.record_walk(leaf(0x20'0000, 0, 21));
    iotlb.invalidate_range(0x2000, 0x1f'ffff, false, false);  // overlaps nothing
    CHECK(iotlb.stats().entries == 3);
    iotlb.invalidate_range(0, ~std::uint64_t{0}, false, false);
    CHECK(iotlb.stats().entries == 0);
    // And the top of the address space is a valid slot to probe (no wrap).
    iotlb.record_walk(leaf(0xffff'ffff'ffff'f000ULL, 0, 12));
    iotlb.record_walk(leaf(0, 0, 12));
    iotlb.record_walk(leaf(0x1000, 0, 12));
    iotlb.record_walk(leaf(0x2000, 0, 12));
    iotlb.invalidate_range(0xffff'ffff'ffff'f000ULL, ~std::uint64_t{0}, false, false);
    CHECK(iotlb.stats().entries == 3);
}
