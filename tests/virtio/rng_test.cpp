// virtio-rng end to end through the fake driver (virtio 1.2 5.4).
#include "virtio/rng.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <algorithm>

#include "tests/support/fake_driver.hpp"

using support::ChainLayout;
using support::FakeDriver;
using support::Segment;

TEST_CASE("Rng fills every writable buffer of a chain with random bytes") {
    FakeDriver driver(std::make_unique<virtio::Rng>());
    REQUIRE(driver.start());
    CHECK(driver.read_reg(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_RNG);
    const std::uint64_t a = driver.ram().alloc(64);
    const std::uint64_t b = driver.ram().alloc(64);
    const std::uint16_t head = driver.add_chain(0, {Segment{a, 64, true}, Segment{b, 64, true}});
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->id == head);
    CHECK(used->len == 128);
    const auto first = driver.ram().read_bytes(a, 64);
    const auto second = driver.ram().read_bytes(b, 64);
    // 64 zero bytes from getrandom() has probability 2^-512.
    CHECK(std::any_of(first.begin(), first.end(), [](std::uint8_t x) { return x != 0; }));
    CHECK(std::any_of(second.begin(), second.end(), [](std::uint8_t x) { return x != 0; }));
    CHECK(first != second);
    CHECK(driver.irq().count() == 1);
}

TEST_CASE("Rng writes nothing into readable buffers and caps one request") {
    FakeDriver driver(std::make_unique<virtio::Rng>());
    REQUIRE(driver.start());
    const std::uint64_t readable = driver.ram().alloc(32);
    const std::uint64_t big = driver.ram().alloc(virtio::Rng::kMaxBytesPerRequest + 4096);
    driver.add_chain(0, {Segment{readable, 32, false}, Segment{big, virtio::Rng::kMaxBytesPerRequest + 4096, true}},
                     ChainLayout::Indirect);
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == virtio::Rng::kMaxBytesPerRequest);
    CHECK(driver.ram().read_bytes(readable, 32) == std::vector<std::uint8_t>(32, 0));
}

TEST_CASE("Rng completes a chain outside guest RAM with length 0 and keeps working") {
    FakeDriver driver(std::make_unique<virtio::Rng>());
    REQUIRE(driver.start());
    driver.add_chain(0, {Segment{driver.ram().end(), 16, true}});
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 0);
    const std::uint64_t ok = driver.ram().alloc(16);
    driver.add_chain(0, {Segment{ok, 16, true}});
    driver.kick(0);
    used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 16);
}
