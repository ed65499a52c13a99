// virtio-iommu features, configuration space and transport behaviour (virtio 1.2 5.13.3-5.13.5,
// 4.2; CONFORMANCE.md D1-D7, D13, D14, G1-G9, L1, L2, L14), through the fake driver.
//
// Conformance items whose Linux side can only be shown in a guest (the device side of each has a
// unit test in tests/iommu/), CONFORMANCE.md L4 (every DT endpoint probes OK, so none falls back to
// untranslated DMA), L8 (the vCPU spinning on the used ring with interrupts off), L9 (MSI-X of a
// translated endpoint via the WRITE|MMIO doorbell MAP), L10 (the driver fills the eventq without a
// kick and logs our reports), L11 (endpoints working before virtio-iommu.ko loads), L12 (the domain
// IDs Linux actually picks): guest-only, covered by tests/rig/viommu.test.sh.
#include <doctest/doctest.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/loopback_device.hpp"
#include "virtio/ring.hpp"
#include "vmm/base/error.hpp"

using namespace viommu_test;

namespace {

constexpr std::uint32_t kBypassOffset = 36;
constexpr std::uint64_t kDeviceBits = feature(VIRTIO_IOMMU_F_INPUT_RANGE) | feature(VIRTIO_IOMMU_F_DOMAIN_RANGE) |
                                      feature(VIRTIO_IOMMU_F_MAP_UNMAP) | feature(VIRTIO_IOMMU_F_PROBE) |
                                      feature(VIRTIO_IOMMU_F_MMIO) | feature(VIRTIO_IOMMU_F_BYPASS_CONFIG);

Options boot_bypass(bool bypass) {
    Options options;
    options.config.boot_bypass = bypass;
    return options;
}

}  // namespace

TEST_CASE("D1 the device offers MAP_UNMAP, and MAP/UNMAP answer UNSUPP unless it is negotiated") {
    Harness h;
    CHECK((h.driver->device_features() & feature(VIRTIO_IOMMU_F_MAP_UNMAP)) != 0);
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_MAP_UNMAP)));
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0, kPage - 1, 0x4000'0000) == S(Status::Unsupp));
    CHECK(h.unmap(1, 0, kPage - 1) == S(Status::Unsupp));
    CHECK_FALSE(h.iommu->mappings(1)->size());
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0, kPage - 1, 0x4000'0000) == S(Status::Ok));
    CHECK(h.unmap(1, 0, kPage - 1) == S(Status::Ok));
}

TEST_CASE("D2 the device never offers the legacy F_BYPASS, even when configured with every bit") {
    Options options;
    options.config.features = kAll;
    Harness h(options);
    CHECK((h.driver->device_features() & feature(VIRTIO_IOMMU_F_BYPASS)) == 0);
    CHECK((iommu::VirtioIommu::kSupportedFeatures & feature(VIRTIO_IOMMU_F_BYPASS)) == 0);
}

TEST_CASE("D3 F_BYPASS and F_BYPASS_CONFIG are never offered together; a driver cannot accept F_BYPASS") {
    for (bool with_config : {true, false}) {
        Options options;
        options.config.features = with_config ? kAll : kAll & ~feature(VIRTIO_IOMMU_F_BYPASS_CONFIG);
        Harness h(options);
        const std::uint64_t offered = h.driver->device_features();
        CHECK(((offered & feature(VIRTIO_IOMMU_F_BYPASS_CONFIG)) != 0) == with_config);
        CHECK((offered & feature(VIRTIO_IOMMU_F_BYPASS)) == 0);
        // A driver forcing the legacy bit in: FEATURES_OK does not stick.
        h.driver->negotiate();
        h.driver->reset();
        h.driver->write_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        h.driver->write_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        h.driver->write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        h.driver->write_reg(VIRTIO_MMIO_DRIVER_FEATURES,
                            static_cast<std::uint32_t>(offered | feature(VIRTIO_IOMMU_F_BYPASS)));
        h.driver->write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        h.driver->write_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<std::uint32_t>(offered >> 32));
        h.driver->write_reg(VIRTIO_MMIO_STATUS, h.driver->status() | VIRTIO_CONFIG_S_FEATURES_OK);
        CHECK((h.driver->status() & VIRTIO_CONFIG_S_FEATURES_OK) == 0);
    }
}

TEST_CASE("D4 page_size_mask has at least one bit set; a zero mask is refused at setup") {
    Harness h;
    CHECK(h.config(0, 8) != 0);
    CHECK(h.config(0, 8) == h.options_.config.window.page_size_mask);
    iommu::VirtioIommuConfig bad;
    bad.window.page_size_mask = 0;
    CHECK_THROWS_AS(iommu::VirtioIommu(std::make_shared<iommu::Iommu>(), bad), vmm::SetupError);
}

TEST_CASE("D5 bypass may start at 1: unattached endpoints then reach guest memory one to one") {
    Harness on(boot_bypass(true));
    CHECK(on.config(kBypassOffset, 1) == 1);
    CHECK(on.gpa_of(1, 0x4000'1234) == 0x4000'1234);  // before any driver
    Harness off(boot_bypass(false));
    CHECK(off.config(kBypassOffset, 1) == 0);
    CHECK_FALSE(off.gpa_of(1, 0x4000'1234));
}

TEST_CASE("D6 bypass survives a device reset and returns to its initial value on VM reset") {
    Harness h(boot_bypass(false));
    REQUIRE(h.start());
    h.driver->write_config(kBypassOffset, 1, 1);
    CHECK(h.config(kBypassOffset, 1) == 1);
    h.driver->reset();  // device reset (Status <- 0)
    CHECK(h.config(kBypassOffset, 1) == 1);
    CHECK(h.gpa_of(1, 0x4000'0000) == 0x4000'0000);
    // A VM reset rebuilds the Machine (vmm/machine.hpp): a new device starts from the boot value.
    Harness rebooted(boot_bypass(false));
    REQUIRE(rebooted.start());
    CHECK(rebooted.config(kBypassOffset, 1) == 0);
    CHECK_FALSE(rebooted.gpa_of(1, 0x4000'0000));
}

TEST_CASE("D7 bypass only ever reads 0 or 1: invalid, unnegotiated and wide writes are ignored") {
    Harness h(boot_bypass(false));
    // Not negotiated (before FEATURES_OK, then negotiated without BYPASS_CONFIG).
    h.driver->write_config(kBypassOffset, 1, 1);
    CHECK(h.config(kBypassOffset, 1) == 0);
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_BYPASS_CONFIG)));
    h.driver->write_config(kBypassOffset, 1, 1);
    CHECK(h.config(kBypassOffset, 1) == 0);
    REQUIRE(h.start());
    for (std::uint64_t value : {2u, 0x80u, 0xffu}) {
        h.driver->write_config(kBypassOffset, 1, value);
        CHECK(h.config(kBypassOffset, 1) == 0);
    }
    h.driver->write_config(kBypassOffset - 4, 4, 0);  // probe_size is not writable
    CHECK(h.config(32, 4) == h.options_.config.probe_size);
    h.driver->write_config(0, 8, 0);  // nor is page_size_mask
    CHECK(h.config(0, 8) == h.options_.config.window.page_size_mask);
    h.driver->write_config(kBypassOffset, 1, 1);
    CHECK(h.config(kBypassOffset, 1) == 1);
    h.driver->write_config(kBypassOffset, 1, 0);
    CHECK(h.config(kBypassOffset, 1) == 0);
    CHECK(h.stats().rejected_config_writes == 7);
}

TEST_CASE("D13 with BYPASS_CONFIG offered and bypass 1, unattached endpoints bypass even if not negotiated") {
    Harness h(boot_bypass(true));
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_BYPASS_CONFIG)));
    CHECK(h.gpa_of(2, 0x4000'8000, Access::Write) == 0x4000'8000);
    // Not offered at all: no bypass, whatever the configured boot value.
    Options options = boot_bypass(true);
    options.config.features = kAll & ~feature(VIRTIO_IOMMU_F_BYPASS_CONFIG);
    Harness none(options);
    CHECK(none.config(kBypassOffset, 1) == 0);
    CHECK_FALSE(none.gpa_of(2, 0x4000'8000));
}

TEST_CASE("D14 after a device reset no endpoint is attached and no domain exists") {
    Harness h(boot_bypass(false));
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 7) == S(Status::Ok));
    REQUIRE(h.map(7, 0, kPage - 1, 0x4000'0000) == S(Status::Ok));
    REQUIRE(h.gpa_of(1, 0x10) == 0x4000'0010);
    h.driver->reset();
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
    CHECK(h.iommu->stats().domains == 0);
    CHECK(h.iommu->stats().live_mappings == 0);
    CHECK_FALSE(h.gpa_of(1, 0x10));
    REQUIRE(h.start());
    CHECK(h.map(7, 0, kPage - 1, 0x4000'0000) == S(Status::NoEnt));
    CHECK(h.detach(1, 7) == S(Status::Inval));
}

TEST_CASE("L1 VERSION_1 and MAP_UNMAP are offered, so the Linux driver binds") {
    Harness h;
    const std::uint64_t offered = h.driver->device_features();
    CHECK((offered & feature(VIRTIO_F_VERSION_1)) != 0);
    CHECK((offered & feature(VIRTIO_IOMMU_F_MAP_UNMAP)) != 0);
    CHECK((offered & kDeviceBits) == kDeviceBits);  // everything the Linux 6.12 driver asks for
    CHECK(h.driver->read_reg(VIRTIO_MMIO_DEVICE_ID) == 23);
}

TEST_CASE("L2 page_size_mask is non-zero with a 4 KiB granule; config fields read at every access width") {
    Options options;
    options.config.window.input_first = 0x1000;
    options.config.window.input_last = 0xffff'ffff'ffffULL;
    options.config.domain_first = 5;
    options.config.domain_last = 0x1234;
    Harness h(options);
    const std::uint64_t mask = h.config(0, 8);
    CHECK(mask != 0);
    CHECK((mask & (~mask + 1)) == 0x1000);  // granule <= the 4 KiB guest page
    // Byte, word, dword and qword reads agree (Linux reads 64-bit fields as two dwords).
    struct Field {
        std::uint32_t offset;
        unsigned size;
        std::uint64_t value;
    };
    for (const Field& f : {Field{0, 8, mask}, Field{8, 8, 0x1000}, Field{16, 8, 0xffff'ffff'ffffULL}, Field{24, 4, 5},
                           Field{28, 4, 0x1234}, Field{32, 4, 512}, Field{36, 1, 1}}) {
        CAPTURE(f.offset);
        std::uint64_t by_bytes = 0, by_words = 0, by_dwords = 0;
        for (unsigned i = 0; i < f.size; ++i) by_bytes |= h.config(f.offset + i, 1) << (8 * i);
        for (unsigned i = 0; i < f.size; i += 2)
            if (f.size >= 2) by_words |= h.config(f.offset + i, 2) << (8 * i);
        for (unsigned i = 0; i < f.size; i += 4)
            if (f.size >= 4) by_dwords |= h.config(f.offset + i, 4) << (8 * i);
        CHECK(by_bytes == f.value);
        if (f.size >= 2) CHECK(by_words == f.value);
        if (f.size >= 4) CHECK(by_dwords == f.value);
    }
    CHECK(h.config(37, 1) == 0);  // reserved
    CHECK(h.config(40, 4) == 0);  // beyond the config
}

TEST_CASE("L14 page_size_mask depends only on the configuration, not on endpoints or backends") {
    auto backend = std::make_shared<iommu::testing::MockIommuBackend>();
    Options a;
    Options b = with_backend(backend, {10, 11});
    b.endpoints.push_back({12, {{vmm::Iova{0x800'0000}, vmm::Iova{0x80f'ffff}, iommu::ResvKind::Msi}}, nullptr});
    Harness first(a), second(b);
    CHECK(first.config(0, 8) == second.config(0, 8));
    REQUIRE(second.start());
    REQUIRE(second.attach(10, 1) == S(Status::Ok));
    CHECK(first.config(0, 8) == second.config(0, 8));
}

TEST_CASE("G1 the virtio-iommu refuses FEATURES_OK without VERSION_1") {
    Harness h;
    CHECK_FALSE(h.driver->negotiate(kAll & ~feature(VIRTIO_F_VERSION_1)));
    CHECK(h.driver->negotiate());
}

TEST_CASE("G2 every subset of the device features is accepted, also on re-negotiation") {
    Harness h;
    for (std::uint64_t subset = 0; subset < 64; ++subset) {
        std::uint64_t wanted = feature(VIRTIO_F_VERSION_1);
        for (unsigned bit = 0, i = 0; bit < 7; ++bit) {
            if (bit == VIRTIO_IOMMU_F_BYPASS) continue;
            if (subset & (1u << i++)) wanted |= feature(bit);
        }
        CAPTURE(wanted);
        REQUIRE(h.start(wanted));  // start() resets first: this is re-negotiation too
        CHECK(h.attach(1, 1) == S(Status::Ok));
    }
}

TEST_CASE("G3 requests posted before DRIVER_OK are not consumed") {
    Harness h;
    REQUIRE(h.driver->negotiate());
    REQUIRE(h.driver->setup_queue(0, 64));
    REQUIRE(h.driver->setup_queue(1, 64));
    h.post(attach_req(1, 1), 4);
    h.kick();
    CHECK(h.collect().empty());
    CHECK(h.driver->irq().count() == 0);
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
    h.driver->driver_ok();
    h.kick();
    const auto replies = h.collect();
    REQUIRE(replies.size() == 1);
    CHECK(replies[0].status() == S(Status::Ok));
}

TEST_CASE("G4 a broken request ring sets DEVICE_NEEDS_RESET with a configuration interrupt") {
    Harness h;
    REQUIRE(h.start());
    h.driver->irq().take();
    h.driver->set_avail_idx(0, 65);  // more than the queue size ahead of the device
    h.kick();
    CHECK((h.driver->status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0);
    CHECK((h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG) != 0);
    CHECK(h.driver->irq().count() >= 1);
    REQUIRE(h.start());  // a reset recovers
    CHECK(h.attach(1, 1) == S(Status::Ok));
}

TEST_CASE("G5 reset clears status, interrupts, queues and IOMMU state but keeps bypass") {
    Harness h(boot_bypass(false));
    REQUIRE(h.start());
    h.driver->write_config(kBypassOffset, 1, 1);
    REQUIRE(h.attach(1, 3) == S(Status::Ok));
    REQUIRE(h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) != 0);
    h.driver->reset();
    CHECK(h.driver->status() == 0);
    CHECK(h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
    for (std::uint32_t q : {0u, 1u}) {
        h.driver->write_reg(VIRTIO_MMIO_QUEUE_SEL, q);
        CHECK(h.driver->read_reg(VIRTIO_MMIO_QUEUE_READY) == 0);
    }
    CHECK(h.iommu->stats().domains == 0);
    CHECK(h.config(kBypassOffset, 1) == 1);
}

TEST_CASE("G6 virtio-mmio identity: magic, version 2, device 23, two queues; interrupts held until ACK") {
    Harness h;
    CHECK(h.driver->read_reg(VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
    CHECK(h.driver->read_reg(VIRTIO_MMIO_VERSION) == 2);
    CHECK(h.driver->read_reg(VIRTIO_MMIO_DEVICE_ID) == 23);
    for (std::uint32_t q : {0u, 1u, 2u}) {
        h.driver->write_reg(VIRTIO_MMIO_QUEUE_SEL, q);
        CHECK((h.driver->read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX) != 0) == (q < 2));
    }
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_VRING);
    CHECK(h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_VRING);
    h.driver->write_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    CHECK(h.driver->read_reg(VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
}

TEST_CASE("G7 requests split across descriptors or in indirect tables work; readable buffers stay intact") {
    Harness h;
    REQUIRE(h.start());
    // Head split in the middle, body in three pieces, tail in two pieces.
    Reply split = h.request(attach_req(1, 1), 4, ChainLayout::Direct, {2, 9, 13}, {1});
    CHECK(split.used == 4);
    CHECK(split.status() == S(Status::Ok));
    Reply indirect = h.request(map_req(1, 0, kPage - 1, 0x4000'0000, 1), 4, ChainLayout::Indirect, {4});
    CHECK(indirect.used == 4);
    CHECK(indirect.status() == S(Status::Ok));
    // The device never writes what it reads: send a request and compare its bytes afterwards.
    const auto bytes = unmap_req(1, 0, kPage - 1);
    const std::uint64_t in = h.ram().alloc(bytes.size());
    const std::uint64_t out = h.ram().alloc(4);
    h.ram().write(in, bytes);
    h.driver->add_chain(0, {Segment{in, static_cast<std::uint32_t>(bytes.size()), false}, Segment{out, 4, true}});
    h.kick();
    auto used = h.driver->pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 4);
    CHECK(h.ram().read_bytes(in, bytes.size()) == bytes);
    CHECK(h.ram().read_obj<std::uint8_t>(out) == S(Status::Ok));
    // A descriptor loop is an error the device answers with used length 0, not a hang.
    vring_desc looping{};
    looping.addr = h.ram().alloc(24);
    looping.len = 24;
    looping.flags = VRING_DESC_F_NEXT;
    looping.next = 40;
    h.driver->write_descriptor(0, 40, looping);
    h.driver->publish(0, 40);
    h.kick();
    used = h.driver->pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 0);
}

TEST_CASE("G8 used-buffer interrupts honour NO_INTERRUPT and, with EVENT_IDX, used_event") {
    Harness h;
    REQUIRE(h.start(kAll & ~feature(VIRTIO_RING_F_EVENT_IDX)));
    h.driver->irq().take();
    h.driver->set_avail_flags(0, VRING_AVAIL_F_NO_INTERRUPT);
    CHECK(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.driver->irq().take() == 0);
    h.driver->set_avail_flags(0, 0);
    CHECK(h.attach(2, 1) == S(Status::Ok));
    CHECK(h.driver->irq().take() == 1);

    REQUIRE(h.start());                      // EVENT_IDX negotiated: notify only when used idx passes used_event
    CHECK(h.attach(1, 1) == S(Status::Ok));  // used idx 0 -> 1 (the first one always notifies)
    h.driver->irq().take();
    h.driver->set_used_event(0, 3);
    CHECK(h.attach(2, 1) == S(Status::Ok));  // 1 -> 2
    CHECK(h.attach(1, 2) == S(Status::Ok));  // 2 -> 3
    CHECK(h.driver->irq().take() == 0);
    CHECK(h.attach(2, 2) == S(Status::Ok));  // 3 -> 4 passes used_event 3
    CHECK(h.driver->irq().take() == 1);
}

TEST_CASE("G9 an endpoint that did not negotiate ACCESS_PLATFORM is not translated") {
    Harness h(boot_bypass(false));
    support::LoopbackDevice::Probe probe;
    support::FakeDriver endpoint(std::make_unique<support::LoopbackDevice>(probe), h.driver->shared_ram(),
                                 h.iommu->translator(1));
    CHECK((endpoint.device_features() & feature(VIRTIO_F_ACCESS_PLATFORM)) != 0);
    // Without ACCESS_PLATFORM: guest-physical DMA although endpoint 1 is blocked in the IOMMU.
    REQUIRE(endpoint.start(kAll & ~feature(VIRTIO_F_ACCESS_PLATFORM)));
    CHECK_FALSE(probe.translated);
    const std::uint64_t in = h.ram().alloc(8), out = h.ram().alloc(8);
    h.ram().write(in, std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    endpoint.add_chain(0, {Segment{in, 8, false}, Segment{out, 8, true}});
    endpoint.kick(0);
    auto used = endpoint.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 8);
    // With it, the same endpoint is translated: blocked, its rings are unreachable at DRIVER_OK.
    CHECK_FALSE(endpoint.start());
    CHECK(probe.translated == false);
    CHECK((endpoint.status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0);
}
