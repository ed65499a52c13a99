#include "devices/vfio/bar_plan.hpp"

#include <doctest/doctest.h>

using devices::vfio::BarPiece;
using devices::vfio::IovaRange;
using devices::vfio::plan_bar;
using devices::vfio::SparseArea;

TEST_CASE("A BAR shared by registers and the MSI-X table traps only the table and PBA pages") {
    // QEMU's default NVMe: registers 0x0-0x1fff, table 0x2000 (65 vectors), PBA 0x3000.
    const SparseArea whole{0, 0x4000};
    const IovaRange traps[] = {{0x2000, 0x2000 + 65 * 16 - 1}, {0x3000, 0x3000 + 16 - 1}};
    auto plan = plan_bar(0x4000, 0x1000, {&whole, 1}, traps);
    REQUIRE(plan.size() == 2);
    CHECK(plan[0] == BarPiece{0, 0x2000, true});
    CHECK(plan[1] == BarPiece{0x2000, 0x2000, false});
}

TEST_CASE("A table in the middle of a BAR splits the direct part around its pages") {
    const SparseArea whole{0, 0x10000};
    const IovaRange traps[] = {{0x4800, 0x48ff}};
    auto plan = plan_bar(0x10000, 0x1000, {&whole, 1}, traps);
    REQUIRE(plan.size() == 3);
    CHECK(plan[0] == BarPiece{0, 0x4000, true});
    CHECK(plan[1] == BarPiece{0x4000, 0x1000, false});
    CHECK(plan[2] == BarPiece{0x5000, 0xb000, true});
}

TEST_CASE("Sparse areas are respected, and what the host will not mmap is trapped") {
    const SparseArea areas[] = {{0, 0x1800}, {0x3000, 0x1000}};  // first area ends mid-page
    auto plan = plan_bar(0x4000, 0x1000, areas, {});
    REQUIRE(plan.size() == 3);
    CHECK(plan[0] == BarPiece{0, 0x1000, true});
    CHECK(plan[1] == BarPiece{0x1000, 0x2000, false});
    CHECK(plan[2] == BarPiece{0x3000, 0x1000, true});
}

TEST_CASE("BARs smaller than a page, unmappable BARs and 64 KiB host pages are trapped as needed") {
    const SparseArea small{0, 0x100};
    CHECK(plan_bar(0x100, 0x1000, {&small, 1}, {}) == std::vector<BarPiece>{{0, 0x100, false}});
    CHECK(plan_bar(0x4000, 0x1000, {}, {}) == std::vector<BarPiece>{{0, 0x4000, false}});
    const SparseArea whole{0, 0x4000};
    const IovaRange traps[] = {{0x2000, 0x23ff}};
    CHECK(plan_bar(0x4000, 0x10000, {&whole, 1}, traps) == std::vector<BarPiece>{{0, 0x4000, false}});
    // Odd inputs from the host: areas past the BAR or overlapping are clipped or skipped.
    const SparseArea odd[] = {{0x8000, 0x1000}, {0, 0x2000}, {0x1000, 0x2000}};
    CHECK(plan_bar(0x4000, 0x1000, odd, {}) == std::vector<BarPiece>{{0, 0x2000, true}, {0x2000, 0x2000, false}});
    CHECK(plan_bar(0, 0x1000, {}, {}).empty());
}
