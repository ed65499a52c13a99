#include "vmm/base/bus.hpp"

#include <doctest/doctest.h>

#include <array>
#include <vector>

#include "vmm/base/error.hpp"

namespace {

struct RecordingDevice final : vmm::MmioDevice {
    std::vector<std::uint64_t> reads, writes;
    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override {
        reads.push_back(offset);
        for (auto& b : data) b = 0xab;
    }
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t>) override { writes.push_back(offset); }
};

vmm::GuestRange range(std::uint64_t base, std::uint64_t size) {
    return *vmm::GuestRange::make(vmm::GuestPhysAddr{base}, size);
}

}  // namespace

TEST_CASE("MmioBus delivers offsets inside the device window") {
    vmm::MmioBus bus;
    RecordingDevice a, b;
    bus.add(range(0x1000, 0x100), a, "a");
    bus.add(range(0x2000, 0x100), b, "b");
    std::array<std::uint8_t, 4> data{};
    CHECK(bus.read(vmm::GuestPhysAddr{0x2010}, data));
    CHECK(b.reads == std::vector<std::uint64_t>{0x10});
    CHECK(data[0] == 0xab);
    CHECK(bus.write(vmm::GuestPhysAddr{0x10fc}, data));
    CHECK(a.writes == std::vector<std::uint64_t>{0xfc});
}

TEST_CASE("MmioBus answers unclaimed and straddling accesses RAZ/WI") {
    vmm::MmioBus bus;
    RecordingDevice a;
    bus.add(range(0x1000, 0x100), a, "a");
    std::array<std::uint8_t, 4> data{1, 2, 3, 4};
    CHECK_FALSE(bus.read(vmm::GuestPhysAddr{0x10fe}, data));  // straddles the end
    CHECK(data == std::array<std::uint8_t, 4>{});
    CHECK_FALSE(bus.read(vmm::GuestPhysAddr{0xfff}, data));       // starts before
    CHECK_FALSE(bus.write(vmm::GuestPhysAddr{~0ULL - 1}, data));  // wraps
    CHECK(a.reads.empty());
    CHECK(a.writes.empty());
}

TEST_CASE("MmioBus refuses overlapping windows") {
    vmm::MmioBus bus;
    RecordingDevice a, b;
    bus.add(range(0x1000, 0x100), a, "a");
    CHECK_THROWS_AS(bus.add(range(0x10ff, 0x10), b, "b"), vmm::SetupError);
}
