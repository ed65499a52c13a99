#include "devices/pci/bar_windows.hpp"

#include <doctest/doctest.h>

#include <array>

#include "devices/pci/bar_allocator.hpp"
#include "tests/support/vfio_test_env.hpp"

namespace {

using devices::pci::BarWindows;
using devices::vfio::testing::RecordingDirectMapper;

vmm::GuestRange r(std::uint64_t base, std::uint64_t size) {
    return *vmm::GuestRange::make(vmm::GuestPhysAddr{base}, size);
}

struct Counter final : vmm::MmioDevice {
    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override {
        last = offset;
        data[0] = 0x5a;
        ++reads;
    }
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t>) override {
        last = offset;
        ++writes;
    }
    std::uint64_t last = 0;
    unsigned reads = 0, writes = 0;
};

}  // namespace

TEST_CASE("BarWindows dispatches trapped accesses with piece-relative offsets") {
    RecordingDirectMapper slots;
    BarWindows w({r(0x40000000, 0x40000000)}, &slots);
    Counter dev;
    CHECK(w.add_trap(r(0x40002000, 0x1000), dev));
    std::array<std::uint8_t, 4> data{};
    w.window(0).mmio_read(0x2010, data);
    CHECK(dev.reads == 1);
    CHECK(dev.last == 0x10);
    CHECK(data[0] == 0x5a);
    w.window(0).mmio_read(0x3000, data);  // no piece: RAZ
    CHECK(data[0] == 0);
    w.window(0).mmio_read(0x2ffe, data);  // straddles the end of the piece
    CHECK(dev.reads == 1);
    w.remove_trap(dev);
    w.window(0).mmio_write(0x2010, data);
    CHECK(dev.writes == 0);
}

TEST_CASE("BarWindows refuses pieces outside the windows or overlapping another piece") {
    RecordingDirectMapper slots;
    BarWindows w({r(0x40000000, 0x40000000), r(0x8000000000, 0x8000000000)}, &slots);
    Counter a, b;
    int host = 0;
    CHECK(w.add_trap(r(0x40000000, 0x4000), a));
    CHECK_FALSE(w.add_trap(r(0x40003000, 0x2000), b));        // overlaps a
    CHECK_FALSE(w.add_direct(r(0x40002000, 0x1000), &host));  // overlaps a
    CHECK_FALSE(w.add_trap(r(0x80000000, 0x1000), b));        // RAM
    CHECK_FALSE(w.add_trap(r(0x7ffff000, 0x2000), b));        // straddles the window's end
    CHECK_FALSE(w.add_direct(r(0x08000000, 0x1000), &host));  // the GIC
    auto slot = w.add_direct(r(0x8000000000, 0x1000), &host);
    REQUIRE(slot);
    CHECK(slots.slots.size() == 1);
    CHECK(w.direct_count() == 1);
    CHECK(w.trap_count() == 1);
    w.remove_direct(*slot);
    CHECK(slots.slots.empty());
    slots.refuse = true;
    CHECK_FALSE(w.add_direct(r(0x8000000000, 0x1000), &host));
    CHECK(w.direct_count() == 0);
}

TEST_CASE("BarAllocator places BARs naturally aligned, 64-bit prefetchable ones high") {
    devices::pci::BarAllocator a(r(0x40000000, 0x40000000), r(0x8000000000, 0x8000000000), 4096);
    CHECK(a.allocate(0x4000, true, false) == 0x40000000);
    CHECK(a.allocate(0x10, false, false) == 0x40004000);      // at least a page
    CHECK(a.allocate(0x100000, false, false) == 0x40100000);  // natural alignment
    CHECK(a.allocate(0x1000, true, true) == 0x8000000000);
    CHECK_FALSE(a.allocate(0x3000, false, false));      // not a power of two
    CHECK_FALSE(a.allocate(0x80000000, false, false));  // larger than the window
}
