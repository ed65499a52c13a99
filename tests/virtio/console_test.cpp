// virtio-console end to end through the fake driver (virtio 1.2 5.3).
#include "virtio/console.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <string>
#include <vector>

#include "tests/support/aliased_chain.hpp"
#include "tests/support/fake_driver.hpp"
#include "virtio/features.hpp"

using support::FakeDriver;
using support::Segment;

namespace {

struct StringSink final : virtio::ConsoleSink {
    std::string& out;
    explicit StringSink(std::string& o) : out(o) {}
    void write(std::span<const std::uint8_t> bytes) override { out.append(bytes.begin(), bytes.end()); }
};

struct Fixture {
    std::string output;
    FakeDriver driver;
    explicit Fixture(virtio::ConsoleOptions options = {})
        : driver(std::make_unique<virtio::Console>(std::make_unique<StringSink>(output), options)) {}

    void input(const std::string& text) {
        driver.transport().with_device([&](virtio::Device& d) {
            static_cast<virtio::Console&>(d).receive_input(
                {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
        });
    }
    std::size_t pending() {
        return driver.transport().with_device(
            [](virtio::Device& d) { return static_cast<virtio::Console&>(d).pending_input(); });
    }
};

std::string as_string(const std::vector<std::uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

}  // namespace

TEST_CASE("Console sends guest output from the transmit queue to the sink") {
    Fixture f;
    REQUIRE(f.driver.start());
    CHECK(f.driver.read_reg(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_CONSOLE);
    const std::string text = "hello, world\n";
    const std::uint64_t a = f.driver.ram().alloc(5);
    const std::uint64_t b = f.driver.ram().alloc(text.size() - 5);
    f.driver.ram().write(a, {reinterpret_cast<const std::uint8_t*>(text.data()), 5});
    f.driver.ram().write(b, {reinterpret_cast<const std::uint8_t*>(text.data()) + 5, text.size() - 5});
    const std::uint16_t head =
        f.driver.add_chain(1, {Segment{a, 5, false}, Segment{b, std::uint32_t(text.size() - 5), false}});
    f.driver.kick(1);
    CHECK(f.output == text);
    auto used = f.driver.pop_used(1);
    REQUIRE(used);
    CHECK(used->id == head);
    CHECK(used->len == 0);
}

TEST_CASE("Console delivers host input into posted receive buffers") {
    Fixture f;
    f.driver.set_auto_used_event(true);
    REQUIRE(f.driver.start());
    const std::uint64_t buf = f.driver.ram().alloc(4);
    f.driver.add_chain(0, {Segment{buf, 4, true}});
    f.driver.kick(0);  // nothing to deliver yet
    CHECK_FALSE(f.driver.pop_used(0));
    f.input("abcdef");
    auto used = f.driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 4);
    CHECK(as_string(f.driver.ram().read_bytes(buf, 4)) == "abcd");
    CHECK(f.pending() == 2);  // the rest waits for the next buffer
    const std::uint64_t buf2 = f.driver.ram().alloc(16);
    f.driver.add_chain(0, {Segment{buf2, 16, true}});
    f.driver.kick(0);
    used = f.driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 2);
    CHECK(as_string(f.driver.ram().read_bytes(buf2, 2)) == "ef");
    CHECK(f.pending() == 0);
    CHECK(f.driver.irq().count() >= 2);
}

TEST_CASE("Console holds input typed before the driver is ready, up to a bound") {
    Fixture f;
    f.input("early");
    CHECK(f.pending() == 5);
    f.input(std::string(virtio::Console::kMaxPendingInput, 'x'));
    CHECK(f.pending() == virtio::Console::kMaxPendingInput);
    virtio::Description description;  // what `lkvm stat` shows
    f.driver.transport().with_device([&](const virtio::Device& d) { d.describe(description); });
    CHECK(description.text() ==
          " input_pending=" + std::to_string(virtio::Console::kMaxPendingInput) + " input_dropped=5 output_dropped=0");
    REQUIRE(f.driver.start());
    const std::uint64_t buf = f.driver.ram().alloc(8);
    f.driver.add_chain(0, {Segment{buf, 8, true}});
    f.driver.kick(0);
    CHECK(as_string(f.driver.ram().read_bytes(buf, 8)) == "earlyxxx");
}

TEST_CASE("Console reports its size only when configured, and signals a resize") {
    Fixture plain;
    CHECK_FALSE(virtio::has_feature(plain.driver.device_features(), VIRTIO_CONSOLE_F_SIZE));
    CHECK(plain.driver.read_config(offsetof(virtio_console_config, cols), 2) == 0);

    virtio::ConsoleOptions options;
    options.cols = 80;
    options.rows = 25;
    Fixture sized(options);
    REQUIRE(sized.driver.start());
    CHECK(virtio::has_feature(sized.driver.negotiated(), VIRTIO_CONSOLE_F_SIZE));
    CHECK(sized.driver.read_config(offsetof(virtio_console_config, cols), 2) == 80);
    CHECK(sized.driver.read_config(offsetof(virtio_console_config, rows), 2) == 25);
    const std::uint32_t generation = sized.driver.read_reg(VIRTIO_MMIO_CONFIG_GENERATION);
    sized.driver.transport().with_device([](virtio::Device& d) { static_cast<virtio::Console&>(d).set_size(132, 43); });
    CHECK(sized.driver.read_config(offsetof(virtio_console_config, cols), 2) == 132);
    CHECK(sized.driver.read_reg(VIRTIO_MMIO_CONFIG_GENERATION) != generation);
    CHECK((sized.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG) != 0);
}

TEST_CASE("Console emergency write prints one character through config space") {
    Fixture f;
    f.driver.write_config(offsetof(virtio_console_config, emerg_wr), 4, 'Z');
    CHECK(f.output == "Z");
}

TEST_CASE("Console survives unreadable transmit and unwritable receive buffers") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.driver.add_chain(1, {Segment{f.driver.ram().end(), 8, false}});
    f.driver.kick(1);
    REQUIRE(f.driver.pop_used(1));
    CHECK(f.output.empty());
    f.driver.add_chain(0, {Segment{f.driver.ram().end(), 8, true}});
    f.input("lost");
    auto used = f.driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 0);
    CHECK((f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
}

// virtio 1.2 section 2.1.2: once the driver set FAILED or the device set
// DEVICE_NEEDS_RESET, host input must not reach the driver's buffers or the used ring.
TEST_CASE("Console input after FAILED or DEVICE_NEEDS_RESET touches no ring") {
    Fixture f;
    REQUIRE(f.driver.start());
    const std::uint64_t buf = f.driver.ram().alloc(4);
    f.driver.add_chain(0, {Segment{buf, 4, true}});
    f.driver.kick(0);
    SUBCASE("the driver gave up (FAILED)") {
        f.driver.write_reg(VIRTIO_MMIO_STATUS, f.driver.status() | VIRTIO_CONFIG_S_FAILED);
    }
    SUBCASE("the device needs a reset (a broken transmit queue)") {
        f.driver.set_avail_idx(1, 100);  // more than the queue size ahead
        f.driver.kick(1);
        REQUIRE((f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0);
    }
    const unsigned interrupts = f.driver.irq().count();
    f.input("abcd");
    CHECK(f.driver.used_idx(0) == 0);
    CHECK(as_string(f.driver.ram().read_bytes(buf, 4)) == std::string(4, '\0'));
    CHECK(f.driver.irq().count() == interrupts);
    CHECK(f.pending() == 4);  // host state: kept for the driver that comes after the reset
    // A reset and a fresh start deliver it.
    REQUIRE(f.driver.start());
    const std::uint64_t buf2 = f.driver.ram().alloc(4);
    f.driver.add_chain(0, {Segment{buf2, 4, true}});
    f.driver.kick(0);
    CHECK(as_string(f.driver.ram().read_bytes(buf2, 4)) == "abcd");
}

TEST_CASE(
    "Console: transmit buffers aliasing one 128 KiB buffer through 512 KiB indirect tables are cut, not sent whole") {
    // Each chain claims 4 GiB; before the cut, four of them sent 16 GiB to the sink.
    std::string output;
    auto ram = std::make_shared<support::FakeGuestRam>(support::FakeGuestRam::kDefaultBase, 8 << 20);
    auto counter = std::make_shared<support::CountingTranslator>();
    FakeDriver driver(std::make_unique<virtio::Console>(std::make_unique<StringSink>(output)), ram, counter);
    REQUIRE(driver.start());
    const std::uint64_t buffer = ram->alloc(support::kAliasedBuffer, 4096);
    ram->fill(buffer, support::kAliasedBuffer, 'x');
    constexpr int kRequests = 4;
    for (int i = 0; i < kRequests; ++i)
        driver.add_chain(1, support::aliased(buffer, support::kIndirectEntries, false), support::ChainLayout::Indirect);
    const std::uint64_t before = counter->read_bytes;
    driver.kick(1);
    for (int i = 0; i < kRequests; ++i) CHECK(driver.pop_used(1));
    CHECK(output.size() == kRequests * virtio::Console::kMaxTransmit);
    // Read from the guest: the cut output plus the indirect tables, nothing near 4 GiB a request.
    CHECK(counter->read_bytes - before <= kRequests * (virtio::Console::kMaxTransmit + 512 * 1024 + 4096));
    const std::uint64_t dropped = driver.transport().with_device(
        [](virtio::Device& d) { return static_cast<virtio::Console&>(d).dropped_output(); });
    CHECK(dropped == kRequests * (std::uint64_t{support::kIndirectEntries} * support::kAliasedBuffer -
                                  virtio::Console::kMaxTransmit));
}
