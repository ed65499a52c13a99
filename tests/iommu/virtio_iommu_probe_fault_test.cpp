// virtio-iommu PROBE, reserved regions, translation and fault reports (virtio 1.2 5.13.6.8,
// 5.13.6.9; CONFORMANCE.md D11, D41-D59, L4, L9-L11), through the fake driver and real endpoint
// devices behind the IOMMU.
#include <doctest/doctest.h>

#include <linux/virtio_config.h>

#include <atomic>
#include <thread>

#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/loopback_device.hpp"
#include "vmm/base/error.hpp"

using namespace viommu_test;
using iommu::ResvKind;
using iommu::ResvRegion;

namespace {

constexpr std::uint64_t kRam = 0x4000'0000;
constexpr std::uint64_t kMsiFirst = 0x800'0000, kMsiLast = 0x80f'ffff;

ResvRegion region(std::uint64_t first, std::uint64_t last, ResvKind kind = ResvKind::Reserved) {
    return {vmm::Iova{first}, vmm::Iova{last}, kind};
}

// Endpoint 3: one MSI window and two reserved holes (reported in this order).
Options with_regions(bool boot_bypass = true) {
    Options options;
    options.config.boot_bypass = boot_bypass;
    options.endpoints.push_back({3,
                                 {region(kMsiFirst, kMsiLast, ResvKind::Msi), region(0x1000'0000, 0x1000'ffff),
                                  region(0xfee0'0000, 0xfeef'ffff)},
                                 nullptr});
    return options;
}

struct Property {
    std::uint16_t type_word, length;
    std::uint8_t subtype;
    std::uint8_t reserved[3];
    std::uint64_t start, end;
};

// Walks the properties the way a driver must: length + 4 apart, until NONE or the end (virtio 1.2
// 5.13.6.7.1).
std::vector<Property> parse_properties(const std::vector<std::uint8_t>& area) {
    std::vector<Property> out;
    std::size_t at = 0;
    while (at + 4 <= area.size()) {
        std::uint16_t type_word, length;
        std::memcpy(&type_word, &area[at], 2);
        std::memcpy(&length, &area[at + 2], 2);
        if ((type_word & 0xfff) == VIRTIO_IOMMU_PROBE_T_NONE) break;
        Property p{};
        std::memcpy(&p, &area[at], std::min<std::size_t>(sizeof p, area.size() - at));
        out.push_back(p);
        at += length + 4u;
    }
    return out;
}

std::vector<std::uint8_t> properties_area(const Reply& reply, std::uint32_t probe_size) {
    return {reply.writable.begin(), reply.writable.begin() + probe_size};
}

// A loopback device (reads its readable bytes back into its writable part) as endpoint `id`,
// sharing the harness's RAM, behind the IOMMU with ACCESS_PLATFORM negotiated.
struct EndpointDevice {
    support::LoopbackDevice::Probe probe;
    support::FakeDriver driver;
    EndpointDevice(Harness& h, std::uint32_t id)
        : driver(std::make_unique<support::LoopbackDevice>(probe), h.driver->shared_ram(), h.iommu->translator(id)) {}
};

}  // namespace

// ---- PROBE ----------------------------------------------------------------------------------------

TEST_CASE("D41 PROBE ignores its 64 reserved bytes") {
    Harness h(with_regions());
    REQUIRE(h.start());
    Reply plain = h.probe(3);
    Reply noisy = h.request(probe_req(3, 0xee), h.options_.config.probe_size + 4);
    CHECK(noisy.status() == S(Status::Ok));
    CHECK(noisy.writable == plain.writable);
}

TEST_CASE("D42 PROBE of an unknown endpoint answers S_NOENT with a zeroed properties area") {
    Harness h(with_regions());
    REQUIRE(h.start());
    Reply reply = h.probe(99);
    CHECK(reply.used == h.options_.config.probe_size + 4);
    CHECK(reply.status() == S(Status::NoEnt));
    CHECK(properties_area(reply, 512) == std::vector<std::uint8_t>(512, 0));
}

TEST_CASE("D43 without F_PROBE offered, PROBE comes back unwritten with used length 0") {
    Options options = with_regions();
    options.config.features = kAll & ~feature(VIRTIO_IOMMU_F_PROBE);
    Harness h(options);
    REQUIRE(h.start());
    CHECK(h.config(32, 4) == 0);  // probe_size is not valid either
    Reply reply = h.request(probe_req(3), 512 + 4);
    CHECK(reply.used == 0);
    CHECK(reply.untouched());
    // Offered but not negotiated: a regular answer, S_UNSUPP.
    Harness offered(with_regions());
    REQUIRE(offered.start(kAll & ~feature(VIRTIO_IOMMU_F_PROBE)));
    Reply unsupp = offered.probe(3);
    CHECK(unsupp.used == 516);
    CHECK(unsupp.status() == S(Status::Unsupp));
}

TEST_CASE("D44 property headers have their reserved bits 12-15 clear") {
    Harness h(with_regions());
    REQUIRE(h.start());
    const auto props = parse_properties(properties_area(h.probe(3), 512));
    REQUIRE(props.size() == 3);
    for (const Property& p : props) CHECK((p.type_word & 0xf000) == 0);
    for (const Property& p : props) CHECK(p.type_word == VIRTIO_IOMMU_PROBE_T_RESV_MEM);
}

TEST_CASE("D45 each property's length is its value size without the 4-byte header (RESV_MEM: 20)") {
    Harness h(with_regions());
    REQUIRE(h.start());
    for (const Property& p : parse_properties(properties_area(h.probe(3), 512))) CHECK(p.length == 20);
}

TEST_CASE("D46 consecutive properties are exactly length + 4 bytes apart, in registration order") {
    Harness h(with_regions());
    REQUIRE(h.start());
    const auto area = properties_area(h.probe(3), 512);
    const std::uint64_t expected[3][3] = {{VIRTIO_IOMMU_RESV_MEM_T_MSI, kMsiFirst, kMsiLast},
                                          {VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 0x1000'0000, 0x1000'ffff},
                                          {VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 0xfee0'0000, 0xfeef'ffff}};
    for (std::size_t i = 0; i < 3; ++i) {
        virtio_iommu_probe_resv_mem p;
        std::memcpy(&p, &area[24 * i], sizeof p);  // fixed 24-byte stride
        CHECK(p.head.type == VIRTIO_IOMMU_PROBE_T_RESV_MEM);
        CHECK(p.subtype == expected[i][0]);
        CHECK(p.start == expected[i][1]);
        CHECK(p.end == expected[i][2]);
    }
}

TEST_CASE("D47 a properties area smaller than probe_size gets no property and S_INVAL") {
    Harness h(with_regions());
    REQUIRE(h.start());
    for (std::uint32_t writable : {4u, 28u, 515u}) {
        CAPTURE(writable);
        Reply reply = h.request(probe_req(3), writable);
        CHECK(reply.used == writable);
        CHECK(reply.status() == S(Status::Inval));  // in the last 4 bytes, where a driver looks
        CHECK(std::vector<std::uint8_t>(reply.writable.begin(), reply.writable.end() - 4) ==
              std::vector<std::uint8_t>(writable - 4, 0));
    }
    // A larger area is fine: probe_size bytes of properties, then the tail.
    Reply wide = h.request(probe_req(3), 600);
    CHECK(wide.used == 516);
    CHECK(wide.writable[512] == S(Status::Ok));
}

TEST_CASE("D48 the unused part of the properties area is zeroed") {
    Harness h(with_regions());
    REQUIRE(h.start());
    Reply reply = h.probe(3);  // the area was full of sentinel bytes before
    CHECK(std::vector<std::uint8_t>(reply.writable.begin() + 72, reply.writable.begin() + 512) ==
          std::vector<std::uint8_t>(440, 0));
    Reply none = h.probe(1);  // no properties at all
    CHECK(properties_area(none, 512) == std::vector<std::uint8_t>(512, 0));
    CHECK(none.status() == S(Status::Ok));
}

TEST_CASE("D49 RESV_MEM reserved bytes are zero") {
    Harness h(with_regions());
    REQUIRE(h.start());
    for (const Property& p : parse_properties(properties_area(h.probe(3), 512)))
        CHECK((p.reserved[0] | p.reserved[1] | p.reserved[2]) == 0);
}

TEST_CASE("D50 an endpoint reports at most one MSI region (a second one is refused at setup)") {
    iommu::Iommu model;
    CHECK_THROWS_AS(
        model.add_endpoint({1, {region(0, 0xfff, ResvKind::Msi), region(0x2000, 0x2fff, ResvKind::Msi)}, {}}),
        vmm::SetupError);
    Harness h(with_regions());
    REQUIRE(h.start());
    int msi = 0;
    for (const Property& p : parse_properties(properties_area(h.probe(3), 512)))
        msi += p.subtype == VIRTIO_IOMMU_RESV_MEM_T_MSI;
    CHECK(msi == 1);
}

TEST_CASE("D51 an endpoint's reserved regions never overlap (overlaps are refused at setup)") {
    iommu::Iommu model;
    CHECK_THROWS_AS(model.add_endpoint({1, {region(0, 0x1fff), region(0x1000, 0x2fff)}, {}}), vmm::SetupError);
    CHECK_THROWS_AS(model.add_endpoint({1, {region(0x2000, 0x1fff)}, {}}), vmm::SetupError);  // empty
    Harness h(with_regions());
    REQUIRE(h.start());
    const auto props = parse_properties(properties_area(h.probe(3), 512));
    for (std::size_t i = 0; i < props.size(); ++i)
        for (std::size_t j = i + 1; j < props.size(); ++j)
            CHECK((props[i].end < props[j].start || props[j].end < props[i].start));
}

TEST_CASE("D52 MAP overlapping a reserved region of any endpoint in the domain answers S_INVAL") {
    Harness h(with_regions());
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.attach(3, 1) == S(Status::Ok));
    CHECK(h.map(1, kMsiFirst, kMsiFirst + 0xfff, kRam) == S(Status::Inval));
    CHECK(h.map(1, 0x0ff0'0000, 0x1000'0fff, kRam) == S(Status::Inval));  // straddles the start
    CHECK(h.map(1, 0xfeef'f000, 0xfef0'0fff, kRam) == S(Status::Inval));  // straddles the end
    CHECK(h.map(1, 0x1001'0000, 0x1001'0fff, kRam) == S(Status::Ok));     // just past it
    REQUIRE(h.detach(3, 1) == S(Status::Ok));
    CHECK(h.map(1, kMsiFirst, kMsiFirst + 0xfff, kRam) == S(Status::Ok));  // 1 has no such region
}

TEST_CASE("D53 accesses to an endpoint's reserved regions affect only that endpoint") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    REQUIRE(h.attach(3, 1) == S(Status::Ok));
    REQUIRE(h.attach(1, 2) == S(Status::Ok));
    REQUIRE(h.map(2, 0x1000'0000, 0x1000'0fff, kRam) == S(Status::Ok));  // 1 may use that IOVA
    h.post_event_buffer();
    CHECK_FALSE(h.gpa_of(3, 0x1000'0010));  // reserved for 3: never accessible
    auto event = h.next_event();
    REQUIRE(event);
    CHECK(event->fault.endpoint == 3);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK(h.gpa_of(1, 0x1000'0010) == kRam + 0x10);  // unaffected
    // The MSI window reaches the interrupt controller untranslated, for endpoint 3 only.
    CHECK(h.gpa_of(3, kMsiFirst + 0x40, Access::Write) == kMsiFirst + 0x40);
    CHECK_FALSE(h.gpa_of(1, kMsiFirst + 0x40, Access::Write));
    CHECK(h.iommu->endpoint_stats(1)->faults == 1);
    CHECK(h.iommu->endpoint_stats(3)->faults == 1);
}

TEST_CASE("L4 PROBE answers S_OK for every registered endpoint, emulated or external") {
    auto backend = std::make_shared<iommu::testing::MockIommuBackend>();
    Options options = with_backend(backend, {10, 11});
    std::vector<ResvRegion> sixteen;
    for (std::uint64_t i = 0; i < 16; ++i) sixteen.push_back(region(i << 20, (i << 20) + 0xfff));
    options.endpoints.push_back({12, sixteen, nullptr});
    Harness h(options);
    REQUIRE(h.start());
    for (std::uint32_t ep : {1u, 2u, 10u, 11u, 12u}) {
        CAPTURE(ep);
        Reply reply = h.probe(ep);
        CHECK(reply.used == 516);
        CHECK(reply.status() == S(Status::Ok));
    }
    CHECK(parse_properties(properties_area(h.probe(12), 512)).size() == 16);
}

// ---- translation and faults -------------------------------------------------------------------------

TEST_CASE("D11 an unattached endpoint without bypass cannot reach memory and faults with R_DOMAIN") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    h.post_event_buffer();
    vmm::DmaMemory dma(h.ram().memory(), h.iommu->translator(2));
    std::vector<std::uint8_t> data(8, 0x77);
    h.ram().fill(kRam, 8, 0);
    CHECK_FALSE(dma.write(vmm::Iova{kRam}, data));
    CHECK(h.ram().read_bytes(kRam, 8) == std::vector<std::uint8_t>(8, 0));
    auto event = h.next_event();
    REQUIRE(event);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_DOMAIN);
    CHECK(event->fault.endpoint == 2);
    CHECK(event->fault.address == kRam);
}

TEST_CASE("Translation spans several contiguous mappings, one fragment each; any gap fails it all") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x0000, 0x0fff, kRam + 0x5000) == S(Status::Ok));
    REQUIRE(h.map(1, 0x1000, 0x2fff, kRam + 0x1000) == S(Status::Ok));
    REQUIRE(h.map(1, 0x3000, 0x3fff, kRam + 0x9000, VIRTIO_IOMMU_MAP_F_READ) == S(Status::Ok));
    REQUIRE(h.map(1, 0x5000, 0x5fff, kRam) == S(Status::Ok));
    using Pieces = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
    CHECK(h.translate(1, 0x0ff0, 0x3010) ==
          Pieces{{kRam + 0x5ff0, 0x10}, {kRam + 0x1000, 0x2000}, {kRam + 0x9000, 0x1000}});
    CHECK_FALSE(h.translate(1, 0x0ff0, 0x3010, Access::Write));  // the last page is read-only
    CHECK_FALSE(h.translate(1, 0x3ff0, 0x20));                   // runs into the hole
    CHECK_FALSE(h.translate(1, ~std::uint64_t{0} - 1, 4));       // wraps
    CHECK_FALSE(h.translate(1, 0, 0));                           // empty
    // Real data across the fragments.
    vmm::DmaMemory dma(h.ram().memory(), h.iommu->translator(1));
    std::vector<std::uint8_t> data(0x20);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i);
    REQUIRE(dma.write(vmm::Iova{0x0ff0}, data));
    CHECK(h.ram().read_bytes(kRam + 0x5ff0, 0x10) == std::vector<std::uint8_t>(data.begin(), data.begin() + 16));
    CHECK(h.ram().read_bytes(kRam + 0x1000, 0x10) == std::vector<std::uint8_t>(data.begin() + 16, data.end()));
}

TEST_CASE("D54 fault reports have reserved and reserved1 zero") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    h.post_event_buffer();
    CHECK_FALSE(h.gpa_of(1, 0x1234));
    auto event = h.next_event();
    REQUIRE(event);
    for (int i : {1, 2, 3, 12, 13, 14, 15}) CHECK(event->raw[i] == 0);
    CHECK(std::vector<std::uint8_t>(event->raw.begin() + 24, event->raw.end()) ==
          std::vector<std::uint8_t>(8, kSentinel));  // nothing beyond the 24 bytes
}

TEST_CASE("D55 fault reports set only defined flags: READ or WRITE, and ADDRESS") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0, kPage - 1, kRam, VIRTIO_IOMMU_MAP_F_READ) == S(Status::Ok));
    h.post_event_buffer();
    h.post_event_buffer();
    CHECK_FALSE(h.gpa_of(1, 0x10, Access::Write));
    CHECK_FALSE(h.gpa_of(1, 0x2000, Access::Read));
    auto write = h.next_event(), read = h.next_event();
    REQUIRE(write);
    REQUIRE(read);
    CHECK(write->fault.flags == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(read->fault.flags == (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(write->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
}

TEST_CASE("D56 fault reports carry the faulting endpoint's ID") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    for (int i = 0; i < 3; ++i) h.post_event_buffer();
    for (std::uint32_t ep : {2u, 3u, 1u}) CHECK_FALSE(h.gpa_of(ep, 0x5000'0000));
    for (std::uint32_t ep : {2u, 3u, 1u}) CHECK(h.next_event()->fault.endpoint == ep);
}

TEST_CASE("D57 fault reports give the first faulting address with FAULT_F_ADDRESS") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x1000, 0x1fff, kRam) == S(Status::Ok));
    h.post_event_buffer();
    CHECK_FALSE(h.translate(1, 0x1ff0, 0x20));  // the second half is unmapped
    auto event = h.next_event();
    REQUIRE(event);
    CHECK((event->fault.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS) != 0);
    CHECK(event->fault.address == 0x2000);
}

TEST_CASE("D58 an event buffer too small for a report is skipped, never used for part of one") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    h.post_event_buffer(16);
    h.post_event_buffer(24);
    CHECK_FALSE(h.gpa_of(1, 0x1000));
    auto small = h.next_event();
    REQUIRE(small);
    CHECK(small->used == 0);
    CHECK(small->raw == std::vector<std::uint8_t>(32, kSentinel));
    auto full = h.next_event();
    REQUIRE(full);
    CHECK(full->used == 24);
    CHECK(full->fault.endpoint == 1);
    CHECK(h.stats().bad_event_buffers == 1);
}

TEST_CASE("D59 with no event buffer posted the report is dropped and counted, without blocking") {
    Harness h(with_regions(false));
    CHECK_FALSE(h.gpa_of(1, 0x1000));  // before DRIVER_OK: no eventq at all
    REQUIRE(h.start());
    for (int i = 0; i < 100; ++i) CHECK_FALSE(h.gpa_of(1, 0x1000));
    CHECK(h.stats().faults_dropped == 101);  // the first one came before activation
    CHECK(h.iommu->stats().faults == 101);
    CHECK(h.iommu->endpoint_stats(1)->faults == 101);
    CHECK_FALSE(h.next_event());
    h.post_event_buffer();  // a later fault uses the new buffer
    CHECK_FALSE(h.gpa_of(1, 0x1000));
    CHECK(h.next_event());
}

TEST_CASE("L9 F_MMIO is offered and an MSI doorbell MAP with WRITE|MMIO is accepted and translated") {
    Harness h;
    CHECK((h.driver->device_features() & feature(VIRTIO_IOMMU_F_MMIO)) != 0);
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    const std::uint64_t doorbell_page = 0x0809'0000;  // vITS GITS_TRANSLATER page (not RAM)
    CHECK(h.map(1, 0xffff'f000, 0xffff'ffff, doorbell_page, VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO) ==
          S(Status::Ok));
    CHECK(h.gpa_of(1, 0xffff'f040, Access::Write) == doorbell_page + 0x40);
    CHECK_FALSE(h.gpa_of(1, 0xffff'f040, Access::Read));
    CHECK(h.iommu->mappings(1)->at(0).flags == (VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO));
}

TEST_CASE("L10 event buffers posted without a kick carry 24-byte reports") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    h.driver->irq().take();
    for (int i = 0; i < 4; ++i) h.post_event_buffer();  // no kick, as Linux does
    CHECK_FALSE(h.gpa_of(2, 0x3000, Access::Write));
    auto event = h.next_event();
    REQUIRE(event);
    CHECK(event->used == 24);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_DOMAIN);
    CHECK(event->fault.address == 0x3000);
    CHECK(h.driver->irq().take() == 1);
    CHECK(h.stats().faults_posted == 1);
}

TEST_CASE("L10 a fault on an endpoint device's own thread reaches the eventq while requests run") {
    Harness h(with_regions(false));
    REQUIRE(h.start());
    for (int i = 0; i < 60; ++i) h.post_event_buffer();
    EndpointDevice ep(h, 1);
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, kRam, kRam + (8 << 20) - 1, kRam) == S(Status::Ok));  // identity for its rings
    REQUIRE(ep.driver.start());
    REQUIRE(ep.probe.translated);
    const std::uint64_t in = h.ram().alloc(8);
    const std::uint64_t out = h.ram().alloc(8);
    constexpr int kRounds = 200;
    std::atomic<bool> ok{true};
    // The endpoint thread: half its requests write into an unmapped IOVA and fault.
    std::thread device_thread([&] {
        for (int i = 0; i < kRounds; ++i) {
            const std::uint64_t target = (i % 2) ? 0x7000'0000 : out;
            ep.driver.add_chain(0, {Segment{in, 8, false}, Segment{target, 8, true}});
            ep.driver.kick(0);
            auto used = ep.driver.pop_used(0);
            if (!used || used->len != ((i % 2) ? 0u : 8u)) ok = false;
        }
    });
    // Meanwhile the guest's IOMMU driver keeps mapping and unmapping elsewhere.
    for (int i = 0; i < kRounds; ++i) {
        CHECK(h.map(1, 0x1000, 0x1fff, kRam) == S(Status::Ok));
        CHECK(h.unmap(1, 0x1000, 0x1fff) == S(Status::Ok));
    }
    device_thread.join();
    CHECK(ok);
    const auto stats = h.stats();
    CHECK(stats.faults_posted == 60);
    CHECK(stats.faults_posted + stats.faults_dropped == kRounds / 2);
    auto event = h.next_event();
    REQUIRE(event);
    CHECK(event->fault.endpoint == 1);
    CHECK(event->fault.address == 0x7000'0000);
    CHECK(event->fault.flags == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
}

TEST_CASE("L11 bypass's initial value decides what endpoints do before the driver and after a reset") {
    for (bool boot : {false, true}) {
        CAPTURE(boot);
        Options options;
        options.config.boot_bypass = boot;
        Harness h(options);
        CHECK(h.gpa_of(1, kRam).has_value() == boot);  // no driver yet
        REQUIRE(h.start());
        REQUIRE(h.attach(1, 1) == S(Status::Ok));
        CHECK_FALSE(h.gpa_of(1, kRam));  // attached to an empty domain
        h.driver->reset();               // e.g. the driver is unloaded
        CHECK(h.gpa_of(1, kRam).has_value() == boot);
    }
}
