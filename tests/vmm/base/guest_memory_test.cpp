#include "vmm/base/guest_memory.hpp"

#include <doctest/doctest.h>

#include <array>

#include "vmm/base/error.hpp"

using vmm::GuestMemory;
using vmm::GuestPhysAddr;
using vmm::GuestRange;

namespace {
GuestRange range(std::uint64_t base, std::uint64_t size) { return *GuestRange::make(GuestPhysAddr{base}, size); }
}  // namespace

TEST_CASE("GuestMemory reads back what was written inside a region") {
    std::array ranges{range(0x4000'0000, 0x10000)};
    GuestMemory mem(ranges);
    std::uint64_t value = 0x1122334455667788;
    CHECK(mem.write_obj(GuestPhysAddr{0x4000'0008}, value));
    CHECK(mem.read_obj<std::uint64_t>(GuestPhysAddr{0x4000'0008}) == value);
}

TEST_CASE("GuestMemory rejects accesses that leave, straddle or wrap past guest RAM") {
    std::array ranges{range(0x4000'0000, 0x10000), range(0x4001'0000 + 0x1000, 0x1000)};
    GuestMemory mem(ranges);
    CHECK_FALSE(mem.read_obj<std::uint32_t>(GuestPhysAddr{0x3fff'fffe}));     // starts before
    CHECK_FALSE(mem.read_obj<std::uint32_t>(GuestPhysAddr{0x4000'fffe}));     // runs off the end
    CHECK_FALSE(mem.read_obj<std::uint32_t>(GuestPhysAddr{0x4001'0000}));     // in the hole
    CHECK_FALSE(mem.read_obj<std::uint64_t>(GuestPhysAddr{~0ULL - 3}));       // wraps 2^64
    CHECK(mem.host_pointer(GuestPhysAddr{0x4000'0000}, 0) == nullptr);        // empty range
    CHECK(mem.host_pointer(GuestPhysAddr{0x4000'0000}, 0x10001) == nullptr);  // one byte too far
    CHECK(mem.host_pointer(GuestPhysAddr{0x4001'1000}, 0x1000) != nullptr);
    CHECK(mem.total_size() == 0x11000);
}

TEST_CASE("GuestMemory refuses overlapping or unaligned regions") {
    std::array overlapping{range(0x4000'0000, 0x2000), range(0x4000'1000, 0x1000)};
    CHECK_THROWS_AS(GuestMemory{overlapping}, vmm::SetupError);
    std::array unaligned{range(0x4000'0100, 0x1000)};
    CHECK_THROWS_AS(GuestMemory{unaligned}, vmm::SetupError);
}
