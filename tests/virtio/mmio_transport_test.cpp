// virtio-mmio v2 transport (virtio 1.2 4.2.2, 2.1, 2.2, 3.1.1) driven through its registers by
// the fake driver, against the loopback test device.
#include "virtio/mmio_transport.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "tests/support/fake_driver.hpp"
#include "tests/support/loopback_device.hpp"
#include "virtio/features.hpp"

using support::FakeDriver;
using support::LoopbackDevice;
using support::Segment;
using virtio::feature_bit;

namespace {

constexpr std::uint8_t kAck = VIRTIO_CONFIG_S_ACKNOWLEDGE;
constexpr std::uint8_t kDriver = VIRTIO_CONFIG_S_DRIVER;
constexpr std::uint8_t kFeaturesOk = VIRTIO_CONFIG_S_FEATURES_OK;
constexpr std::uint8_t kDriverOk = VIRTIO_CONFIG_S_DRIVER_OK;
constexpr std::uint8_t kNeedsReset = VIRTIO_CONFIG_S_NEEDS_RESET;
constexpr std::uint8_t kFailed = VIRTIO_CONFIG_S_FAILED;
constexpr std::uint64_t kVersion1 = feature_bit(VIRTIO_F_VERSION_1);
constexpr std::uint64_t kAccessPlatform = feature_bit(VIRTIO_F_ACCESS_PLATFORM);

struct Fixture {
    LoopbackDevice::Probe probe;
    FakeDriver driver;
    explicit Fixture(LoopbackDevice::Probe p = {}) : probe(p), driver(std::make_unique<LoopbackDevice>(probe)) {}

    // One request through queue q: 4 readable bytes echoed into an 8-byte writable buffer.
    std::uint16_t echo(std::uint16_t q = 0) {
        const std::uint64_t in = driver.ram().alloc(4);
        const std::uint64_t out = driver.ram().alloc(8);
        driver.ram().write(in, std::vector<std::uint8_t>{0xde, 0xad, 0xbe, 0xef});
        const std::uint16_t head = driver.add_chain(q, {Segment{in, 4, false}, Segment{out, 8, true}});
        driver.kick(q);
        return head;
    }
};

// Identity translator that records whether it was used.
struct CountingTranslator final : vmm::Translator {
    mutable unsigned calls = 0;
    bool translate(vmm::Iova iova, std::uint64_t length, vmm::Access, vmm::FragmentVisitor& v) const override {
        ++calls;
        return v.visit(vmm::GuestPhysAddr{iova.value}, length);
    }
};

}  // namespace

TEST_CASE("G6 MmioTransport identifies as a virtio-mmio version 2 device") {
    Fixture f;
    CHECK(f.driver.read_reg(VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_VERSION) == 2);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_DEVICE_ID) == LoopbackDevice::kDeviceId);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_VENDOR_ID) == virtio::MmioTransport::kVendorId);
    CHECK(f.driver.status() == 0);
    CHECK(virtio::MmioTransport::queue_notify_offset() == VIRTIO_MMIO_QUEUE_NOTIFY);
}

TEST_CASE("G1 MmioTransport offers VERSION_1 and refuses FEATURES_OK without it") {
    Fixture f;
    CHECK((f.driver.device_features() & kVersion1) != 0);
    CHECK_FALSE(f.driver.negotiate(~kVersion1));
    CHECK((f.driver.status() & kFeaturesOk) == 0);
    CHECK(f.driver.negotiate());
}

TEST_CASE("G2 MmioTransport masks transport features the core does not implement") {
    LoopbackDevice::Probe p;
    p.features |= feature_bit(VIRTIO_F_RING_PACKED) | feature_bit(VIRTIO_F_RING_RESET) | feature_bit(38) |
                  feature_bit(VIRTIO_F_ACCESS_PLATFORM) | feature_bit(VIRTIO_F_IN_ORDER);
    Fixture f(p);
    const std::uint64_t offered = f.driver.device_features();
    CHECK(offered ==
          (LoopbackDevice::kFeatureA | LoopbackDevice::kFeatureB | feature_bit(28) | feature_bit(29) | kVersion1));
    f.driver.write_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_DEVICE_FEATURES) == 1);  // bits 32-63: only VERSION_1
    f.driver.write_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_DEVICE_FEATURES) == 0);  // beyond bit 63
}

TEST_CASE("G2 MmioTransport refuses FEATURES_OK for unoffered features or a subset the device rejects") {
    Fixture f;
    // Feature B without A: the device model refuses.
    CHECK_FALSE(f.driver.negotiate(~LoopbackDevice::kFeatureA));
    CHECK(f.driver.status() == (kAck | kDriver));
    // An unoffered bit written by hand.
    f.driver.reset();
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck | kDriver);
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES, 1u << 5);
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES, 1);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck | kDriver | kFeaturesOk);
    CHECK((f.driver.status() & kFeaturesOk) == 0);
    // CONFORMANCE.md G2: the same accepted set negotiates again after a reset.
    CHECK(f.driver.negotiate());
    CHECK(f.driver.negotiate());
}

TEST_CASE("MmioTransport ignores driver features written outside the DRIVER state") {
    Fixture f;
    REQUIRE(f.driver.negotiate(kVersion1));
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    f.driver.write_reg(VIRTIO_MMIO_DRIVER_FEATURES, 0xffffffff);  // after FEATURES_OK: ignored
    REQUIRE(f.driver.setup_queue(0, 8));
    f.driver.driver_ok();
    CHECK(f.probe.activated_features == kVersion1);
}

TEST_CASE("MmioTransport status machine follows ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK in order") {
    Fixture f;
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck | kDriver);  // skips ACKNOWLEDGE
    CHECK(f.driver.status() == 0);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);
    CHECK(f.driver.status() == kAck);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck | kDriver | kDriverOk);  // skips FEATURES_OK
    CHECK(f.driver.status() == kAck);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);  // rewriting the same value is harmless
    CHECK(f.driver.status() == kAck);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, 0x100 | kAck | kDriver);  // bits beyond the status byte
    CHECK(f.driver.status() == kAck);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck | kDriver);
    CHECK(f.driver.status() == (kAck | kDriver));
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);  // clearing a bit is not a transition
    CHECK(f.driver.status() == (kAck | kDriver));
    CHECK(f.probe.activations == 0);
}

TEST_CASE("MmioTransport FAILED sticks until reset and stops queue processing") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.driver.write_reg(VIRTIO_MMIO_STATUS, f.driver.status() | kFailed);
    CHECK((f.driver.status() & kFailed) != 0);
    f.echo();
    CHECK(f.probe.notifies == 0);
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);  // nothing but reset leaves FAILED
    CHECK((f.driver.status() & kFailed) != 0);
    f.driver.reset();
    CHECK(f.driver.status() == 0);
}

TEST_CASE("MmioTransport runs a request end to end and raises a used-buffer interrupt") {
    Fixture f;
    REQUIRE(f.driver.start());
    CHECK(f.probe.activations == 1);
    const std::uint16_t head = f.echo();
    auto used = f.driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->id == head);
    CHECK(used->len == 4);
    CHECK(f.driver.irq().count() == 1);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_VRING);
}

TEST_CASE("G6 InterruptStatus bits stay set until acknowledged, and only those bits clear") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.echo();
    f.driver.transport().with_device(
        [](virtio::Device& d) { static_cast<LoopbackDevice&>(d).context()->signal_config_change(); });
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG));
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG));
    f.driver.write_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG);
    f.driver.write_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
}

TEST_CASE("G6 ConfigGeneration changes when the device changes its configuration") {
    Fixture f;
    REQUIRE(f.driver.start());
    const std::uint32_t before = f.driver.read_reg(VIRTIO_MMIO_CONFIG_GENERATION);
    f.driver.transport().with_device(
        [](virtio::Device& d) { static_cast<LoopbackDevice&>(d).context()->signal_config_change(); });
    CHECK(f.driver.read_reg(VIRTIO_MMIO_CONFIG_GENERATION) != before);
    CHECK(f.driver.irq().count() == 1);
}

TEST_CASE("G3 MmioTransport delivers no kicks to the device before DRIVER_OK") {
    Fixture f;
    REQUIRE(f.driver.negotiate());
    REQUIRE(f.driver.setup_queue(0, 8));
    f.echo();
    (void)f.driver.transport().notify(0);
    CHECK(f.probe.notifies == 0);
    CHECK(f.driver.used_idx(0) == 0);
    CHECK(f.driver.irq().count() == 0);
    f.driver.driver_ok();
    f.driver.kick(0);
    CHECK(f.driver.used_idx(0) == 1);
}

TEST_CASE("G6 MmioTransport never touches a queue the driver did not make ready") {
    Fixture f;
    REQUIRE(f.driver.negotiate());
    REQUIRE(f.driver.setup_queue(0, 8));  // queue 1 stays not ready
    f.driver.driver_ok();
    f.driver.kick(1);
    (void)f.driver.transport().notify(1);
    CHECK(f.probe.notifies == 0);
    f.driver.kick(7);  // a queue that does not exist
    CHECK(f.probe.notifies == 0);
}

TEST_CASE("MmioTransport QueueSel beyond the device's queues reads as absent and ignores writes") {
    Fixture f;
    REQUIRE(f.driver.negotiate());
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 2);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX) == 0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_READY) == 0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 0xffffffff);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX) == 0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 1);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX) == 64);
}

TEST_CASE("MmioTransport accepts QueueReady 0 for a stopped queue after reset, as Linux writes it") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.driver.reset();
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_READY, 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_READY) == 0);
    CHECK(f.driver.status() == 0);
}

TEST_CASE("MmioTransport serialises kicks from an event-loop thread with vCPU register accesses") {
    Fixture f;
    REQUIRE(f.driver.start());
    constexpr int kRequests = 200;
    std::atomic<bool> stop{false};
    // The "event loop" kicks continuously while this thread submits requests and reads registers.
    std::thread event_loop([&] {
        while (!stop.load()) (void)f.driver.transport().notify(0);
    });
    const std::uint64_t in = f.driver.ram().alloc(4);
    const std::uint64_t out = f.driver.ram().alloc(4);
    unsigned completed = 0;
    for (int i = 0; i < kRequests; ++i) {
        f.driver.add_chain(0, {Segment{in, 4, false}, Segment{out, 4, true}});
        (void)f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS);
        f.driver.write_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        f.driver.kick(0);
        while (f.driver.pop_used(0)) ++completed;
    }
    stop = true;
    event_loop.join();
    f.driver.kick(0);
    while (f.driver.pop_used(0)) ++completed;
    CHECK(completed == kRequests);
    CHECK((f.driver.status() & kNeedsReset) == 0);
}

TEST_CASE("MmioTransport caps QueueNumMax at 32768") {
    LoopbackDevice::Probe p;
    p.max_size = 65535;
    Fixture f(p);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX) == 32768);
}

TEST_CASE("MmioTransport ignores queue writes after DRIVER_OK and before FEATURES_OK") {
    Fixture f;
    f.driver.write_reg(VIRTIO_MMIO_STATUS, kAck);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_READY, 1);  // before FEATURES_OK
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_READY) == 0);
    REQUIRE(f.driver.start());
    const auto rings = f.driver.rings(0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);  // would move a live ring
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_READY, 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_READY) == 1);
    f.echo();
    CHECK(f.driver.used_idx(0) == 1);  // still the original rings
    CHECK(rings.desc == f.driver.rings(0).desc);
}

TEST_CASE("MmioTransport ignores queue address writes while the queue is ready") {
    Fixture f;
    REQUIRE(f.driver.negotiate());
    REQUIRE(f.driver.setup_queue(0, 8));
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_NUM, 3);  // ready: ignored, size stays 8
    f.driver.driver_ok();
    CHECK((f.driver.status() & kNeedsReset) == 0);
    f.echo();
    CHECK(f.driver.used_idx(0) == 1);
}

TEST_CASE("G4 an invalid ring at DRIVER_OK sets DEVICE_NEEDS_RESET with a config interrupt") {
    Fixture f;
    REQUIRE(f.driver.negotiate());
    REQUIRE(f.driver.setup_queue(0, 8));
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, 1);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_NUM, 6);  // not a power of two
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    f.driver.driver_ok();
    CHECK((f.driver.status() & kNeedsReset) != 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG);
    CHECK(f.driver.irq().count() == 1);
    CHECK(f.probe.activations == 0);
    f.echo();
    CHECK(f.probe.notifies == 0);
}

TEST_CASE("G4 a queue broken by the driver sets DEVICE_NEEDS_RESET and stops processing") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.driver.set_avail_idx(0, 100);  // more than the queue size ahead
    f.driver.kick(0);
    CHECK((f.driver.status() & kNeedsReset) != 0);
    CHECK((f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG) != 0);
    const unsigned notifies = f.probe.notifies;
    f.driver.kick(0);
    CHECK(f.probe.notifies == notifies);
    // Echoing NEEDS_RESET back in a status write does not confuse the state machine.
    f.driver.write_reg(VIRTIO_MMIO_STATUS, f.driver.status());
    CHECK((f.driver.status() & kNeedsReset) != 0);
    CHECK(f.driver.start());  // a reset recovers the device
    f.echo();
    CHECK(f.driver.used_idx(0) == 1);
}

TEST_CASE("G4 a device that refuses activation leaves the driver a NEEDS_RESET") {
    LoopbackDevice::Probe p;
    p.refuse_activation = true;
    Fixture f(p);
    CHECK_FALSE(f.driver.start());
    CHECK((f.driver.status() & kNeedsReset) != 0);
}

TEST_CASE("G5 reset clears InterruptStatus, QueueReady and Status and resets the device") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.echo();
    REQUIRE(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) != 0);
    const unsigned resets = f.probe.resets;
    f.driver.write_reg(VIRTIO_MMIO_STATUS, 0);
    CHECK(f.driver.status() == 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
    for (std::uint32_t q = 0; q < 2; ++q) {
        f.driver.write_reg(VIRTIO_MMIO_QUEUE_SEL, q);
        CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_READY) == 0);
    }
    CHECK(f.probe.resets == resets + 1);
}

TEST_CASE("G5 after reset the device does not touch the old rings or interrupt") {
    Fixture f;
    REQUIRE(f.driver.start());
    f.driver.write_reg(VIRTIO_MMIO_STATUS, 0);
    const unsigned irqs = f.driver.irq().count();
    // The driver still has the old ring state; a kick must not reach it.
    const std::uint64_t avail = f.driver.rings(0).avail;
    f.driver.ram().write_obj<std::uint16_t>(avail + 4, 0);
    f.driver.ram().write_obj<std::uint16_t>(avail + 2, 1);
    (void)f.driver.transport().notify(0);
    f.driver.write_reg(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    CHECK(f.driver.ram().read_obj<std::uint16_t>(f.driver.rings(0).used + 2) == 0);
    CHECK(f.driver.irq().count() == irqs);
    f.driver.reset();  // a second reset is idempotent
    CHECK(f.driver.status() == 0);
}

TEST_CASE("MmioTransport answers only aligned 4-byte register accesses") {
    Fixture f;
    std::array<std::uint8_t, 2> half{0xff, 0xff};
    f.driver.read_raw(VIRTIO_MMIO_MAGIC_VALUE, half);
    CHECK(half == std::array<std::uint8_t, 2>{0, 0});
    std::array<std::uint8_t, 4> word{};
    f.driver.read_raw(VIRTIO_MMIO_MAGIC_VALUE + 1, word);  // misaligned
    CHECK(word == std::array<std::uint8_t, 4>{0, 0, 0, 0});
    const std::array<std::uint8_t, 1> ack{kAck};
    f.driver.write_raw(VIRTIO_MMIO_STATUS, ack);  // a byte write to Status is ignored
    CHECK(f.driver.status() == 0);
    f.driver.write_reg(VIRTIO_MMIO_MAGIC_VALUE, 0);  // read-only
    CHECK(f.driver.read_reg(VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
}

TEST_CASE("MmioTransport reports no shared memory regions and ignores legacy registers") {
    Fixture f;
    f.driver.write_reg(VIRTIO_MMIO_SHM_SEL, 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_SHM_LEN_LOW) == 0xffffffff);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_SHM_LEN_HIGH) == 0xffffffff);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_SHM_BASE_LOW) == 0xffffffff);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_SHM_BASE_HIGH) == 0xffffffff);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_QUEUE_PFN) == 0);
    CHECK(f.driver.read_reg(VIRTIO_MMIO_GUEST_PAGE_SIZE) == 0);
}

TEST_CASE("MmioTransport config space is bounds-checked with zero fill and natural alignment") {
    Fixture f;
    CHECK(f.driver.read_config(0, 1) == 1);
    CHECK(f.driver.read_config(2, 2) == 0x0403);
    CHECK(f.driver.read_config(4, 4) == 0x08070605);
    CHECK(f.driver.read_config(8, 8) == 0x0c0b0a09);  // 4 bytes in range, 4 beyond: zero
    CHECK(f.driver.read_config(12, 4) == 0);          // beyond config_size
    CHECK(f.driver.read_config(0xfc, 4) == 0);        // end of the window
    CHECK(f.driver.read_config(1, 2) == 0);           // misaligned
    CHECK(f.driver.read_config(0, 3) == 0);           // odd size
    f.driver.write_config(4, 4, 0xaabbccdd);
    CHECK(f.probe.config[4] == 0xdd);
    f.driver.write_config(8, 8, ~0ULL);  // straddles the end: ignored entirely
    CHECK(f.probe.config[8] == 9);
    f.driver.write_config(1, 2, 0xffff);  // misaligned: ignored
    CHECK(f.probe.config[1] == 2);
    f.driver.write_config(0x40, 4, 1);  // beyond: ignored (no crash)
}

TEST_CASE("G9 DMA is identity unless ACCESS_PLATFORM is negotiated behind an IOMMU") {
    auto translator = std::make_shared<CountingTranslator>();
    LoopbackDevice::Probe probe;
    FakeDriver driver(std::make_unique<LoopbackDevice>(probe), nullptr, translator);
    REQUIRE((driver.device_features() & kAccessPlatform) != 0);

    SUBCASE("not negotiated: untranslated") {
        REQUIRE(driver.start(~kAccessPlatform));
        CHECK_FALSE(probe.translated);
        CHECK(translator->calls == 0);
    }
    SUBCASE("negotiated: every ring and buffer access goes through the translator") {
        REQUIRE(driver.start());
        CHECK(probe.translated);
        const unsigned before = translator->calls;
        const std::uint64_t buf = driver.ram().alloc(8);
        driver.add_chain(0, {Segment{buf, 8, true}});
        driver.kick(0);
        CHECK(driver.used_idx(0) == 1);
        CHECK(translator->calls > before);
    }
}

TEST_CASE("MmioTransport does not offer ACCESS_PLATFORM when not behind an IOMMU") {
    Fixture f;
    CHECK((f.driver.device_features() & kAccessPlatform) == 0);
}

// One kick of a driver that re-posts every buffer as soon as it completes must
// not keep the serving thread (the event loop serves every device, stdin and the signals).
TEST_CASE("MmioTransport serves at most one ring's worth per notify and asks for another pass") {
    Fixture f;
    REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 16));
    unsigned reposts = 0;
    constexpr unsigned kReposts = 1000;
    f.probe.on_completed = [&](std::uint16_t q, std::uint16_t head) {
        if (reposts < kReposts) {
            ++reposts;
            f.driver.publish(q, head);
        }
    };
    for (int i = 0; i < 16; ++i) {
        const std::uint64_t in = f.driver.ram().alloc(4);
        const std::uint64_t out = f.driver.ram().alloc(4);
        const std::vector<Segment> chain{Segment{in, 4, false}, Segment{out, 4, true}};
        f.driver.publish(0, f.driver.write_chain(0, chain));
    }
    // The ioeventfd path: the first pass takes one ring's worth and reports the rest.
    CHECK(f.driver.transport().notify(0));
    CHECK(f.probe.completed == 16);
    // Each later pass (the event loop re-arms the doorbell) is bounded the same way.
    unsigned passes = 1;
    while (f.driver.transport().notify(0)) {
        ++passes;
        REQUIRE(passes <= 1 + (16 + kReposts) / 16);
    }
    CHECK(f.probe.completed == 16 + kReposts);
    CHECK(f.driver.used_idx(0) == static_cast<std::uint16_t>(16 + kReposts));
    CHECK(passes >= (16 + kReposts) / 16);
    CHECK_FALSE(f.driver.transport().notify(0));  // nothing left: no further pass
}

TEST_CASE("MmioTransport serves an inline (vCPU) kick to the end: no doorbell to re-arm") {
    Fixture f;
    REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 16));
    unsigned reposts = 0;
    f.probe.on_completed = [&](std::uint16_t q, std::uint16_t head) {
        if (reposts < 100) {
            ++reposts;
            f.driver.publish(q, head);
        }
    };
    f.echo();
    CHECK(f.probe.completed == 101);
    CHECK(f.driver.used_idx(0) == 101);
}
