// virtio-iommu requests through the fake driver (virtio 1.2 5.13.6.1-5.13.6.6;
// CONFORMANCE.md D8-D10, D12, D15-D40, L3, L5-L8, L12, L13).
#include <doctest/doctest.h>

#include "tests/iommu/viommu_harness.hpp"

using namespace viommu_test;

namespace {

constexpr std::uint32_t kRW = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE;
constexpr std::uint64_t kRam = 0x4000'0000;

// A harness whose granule is one byte, so the spec's UNMAP examples run with their own numbers.
Options byte_granule() {
    Options options;
    options.config.window.page_size_mask = ~std::uint64_t{0};
    return options;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges(Harness& h, std::uint32_t domain) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (const iommu::Mapping& m : h.iommu->mappings(domain).value_or(std::vector<iommu::Mapping>{}))
        out.emplace_back(m.first.value, m.last.value);
    return out;
}
using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

// Spec UNMAP example: fresh domain `domain` holding `mappings`, then UNMAP (start, end).
std::uint8_t unmap_example(Harness& h, std::uint32_t domain, const Ranges& mappings, std::uint64_t start,
                           std::uint64_t end) {
    REQUIRE(h.attach(1, domain) == S(Status::Ok));
    for (auto [first, last] : mappings) REQUIRE(h.map(domain, first, last, kRam + first) == S(Status::Ok));
    return h.unmap(domain, start, end);
}

}  // namespace

// ---- framing --------------------------------------------------------------------------------------

TEST_CASE("D8 a successful request reports S_OK in a tail at writable offset 0") {
    Harness h;
    REQUIRE(h.start());
    Reply reply = h.request(attach_req(1, 1), 4);
    CHECK(reply.used == 4);
    CHECK(reply.writable == std::vector<std::uint8_t>{S(Status::Ok), 0, 0, 0});
}

TEST_CASE("D9 an unknown request type is returned unwritten with used length 0") {
    Harness h;
    REQUIRE(h.start());
    for (std::uint8_t type : {0x00, 0x06, 0x7f, 0xff}) {
        auto bytes = attach_req(1, 1);
        bytes[0] = type;
        Reply reply = h.request(bytes, 8);
        CHECK(reply.completed);
        CHECK(reply.used == 0);
        CHECK(reply.untouched());
    }
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
    CHECK(h.stats().unanswered == 4);
}

TEST_CASE("D10 head.reserved is ignored and tail.reserved is written as zero") {
    Harness h;
    REQUIRE(h.start());
    auto bytes = attach_req(3, 1);
    bytes[1] = bytes[2] = bytes[3] = 0x5a;
    Reply reply = h.request(bytes, 4);
    CHECK(reply.writable == std::vector<std::uint8_t>{S(Status::Ok), 0, 0, 0});
    CHECK(h.iommu->endpoint_stats(1)->domain == 3u);
    Reply error = h.request(map_req(99, 0, kPage - 1, kRam, kRW), 4);
    CHECK(error.writable == std::vector<std::uint8_t>{S(Status::NoEnt), 0, 0, 0});
}

TEST_CASE("D12 a request without room for a tail, or without a head, comes back unwritten") {
    Harness h;
    REQUIRE(h.start());
    for (std::uint32_t writable : {0u, 1u, 3u}) {
        Reply reply = h.request(attach_req(1, 1), writable);
        CHECK(reply.completed);
        CHECK(reply.used == 0);
        CHECK(reply.untouched());
    }
    const auto head_only = attach_req(1, 1);
    Reply short_head = h.request(std::vector<std::uint8_t>(head_only.begin(), head_only.begin() + 3), 4);
    CHECK(short_head.used == 0);
    CHECK(short_head.untouched());
    Reply no_readable = h.request(std::vector<std::uint8_t>{}, 4);
    CHECK(no_readable.used == 0);
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
}

TEST_CASE("L3 used length is the whole writable length on success and on every error, also when too short") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.attach(77, 1) == S(Status::NoEnt));
    CHECK(h.detach(1, 2) == S(Status::Inval));
    CHECK(h.map(1, 1, kPage, kRam) == S(Status::Range));
    CHECK(h.unmap(9, 0, kPage - 1) == S(Status::NoEnt));
    // Readable part shorter than the request's fixed size: S_INVAL, still a 4-byte answer.
    for (auto bytes : {attach_req(1, 1), detach_req(1, 1), map_req(1, 0, kPage - 1, kRam, kRW), unmap_req(1, 0, 1)}) {
        bytes.pop_back();
        Reply reply = h.request(bytes, 4);
        CHECK(reply.used == 4);
        CHECK(reply.status() == S(Status::Inval));
    }
    // Longer writable areas: the tail still goes at offset 0 and used stays 4.
    Reply wide = h.request(detach_req(1, 1), 16);
    CHECK(wide.used == 4);
    CHECK(wide.writable[0] == S(Status::Ok));
    // PROBE: probe_size + 4 on success and on error.
    const std::uint32_t probe_used = h.options_.config.probe_size + 4;
    CHECK(h.probe(1).used == probe_used);
    CHECK(h.probe(1).status() == S(Status::Ok));
    CHECK(h.probe(1234).used == probe_used);
    CHECK(h.probe(1234).status() == S(Status::NoEnt));
}

// ---- ATTACH ---------------------------------------------------------------------------------------

TEST_CASE("D15 ATTACH with non-zero reserved bytes is rejected with S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    for (int i = 0; i < 4; ++i) {
        auto bytes = attach_req(1, 1);
        bytes[16 + i] = 1;
        CHECK(h.simple(bytes) == S(Status::Inval));
    }
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
}

TEST_CASE("D16 ATTACH with an unknown flag is rejected with S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.attach(1, 1, 1u << 1) == S(Status::Inval));
    CHECK(h.attach(1, 1, 0x8000'0000) == S(Status::Inval));
    // ATTACH_F_BYPASS is itself unknown when BYPASS_CONFIG was not negotiated.
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_BYPASS_CONFIG)));
    CHECK(h.attach(1, 1, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Inval));
    CHECK(h.iommu->stats().domains == 0);
}

TEST_CASE("D17 ATTACH of an unknown endpoint is rejected with S_NOENT") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.attach(3, 1) == S(Status::NoEnt));
    CHECK(h.iommu->stats().domains == 0);
}

TEST_CASE("D18 a second endpoint may join a domain that already has one") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 4) == S(Status::Ok));
    REQUIRE(h.map(4, 0, kPage - 1, kRam) == S(Status::Ok));
    CHECK(h.attach(2, 4) == S(Status::Ok));
    CHECK(h.iommu->domain_stats(4)->endpoints.size() == 2);
    CHECK(h.gpa_of(1, 0x10) == kRam + 0x10);
    CHECK(h.gpa_of(2, 0x10) == kRam + 0x10);
}

TEST_CASE("D19 ATTACH whose bypass flag differs from the existing domain is rejected with S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 4) == S(Status::Ok));
    CHECK(h.attach(2, 4, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Inval));
    REQUIRE(h.attach(2, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK(h.attach(1, 5) == S(Status::Inval));
    // Rejected without side effect: endpoint 1 is still in domain 4.
    CHECK(h.iommu->endpoint_stats(1)->domain == 4u);
}

TEST_CASE("D20 ATTACH of an attached endpoint detaches it first, destroying an emptied domain") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0, kPage - 1, kRam) == S(Status::Ok));
    REQUIRE(h.attach(1, 2) == S(Status::Ok));  // implicit detach from 1
    CHECK_FALSE(h.iommu->domain_stats(1));
    CHECK(h.map(1, 0, kPage - 1, kRam) == S(Status::NoEnt));  // domain 1 is gone
    CHECK_FALSE(h.gpa_of(1, 0x10));                           // its mapping is unreachable
    REQUIRE(h.attach(2, 2) == S(Status::Ok));
    REQUIRE(h.attach(1, 1) == S(Status::Ok));  // a new, empty domain 1
    CHECK(ranges(h, 1).empty());
    CHECK(h.iommu->domain_stats(2)->endpoints == std::vector<iommu::EndpointId>{2});  // 2 stays
    CHECK(h.attach(1, 1) == S(Status::Ok));                                           // same domain again: a no-op
    CHECK(h.iommu->domain_stats(1)->endpoints.size() == 1);
}

TEST_CASE("D21 ATTACH is refused with S_UNSUPP when the endpoint's reserved regions clash with the domain") {
    Options options;
    options.endpoints.push_back(
        {3, {{vmm::Iova{0x800'0000}, vmm::Iova{0x80f'ffff}, iommu::ResvKind::Reserved}}, nullptr});
    Harness h(options);
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x800'0000, 0x800'0fff, kRam) == S(Status::Ok));
    CHECK(h.attach(3, 1) == S(Status::Unsupp));
    CHECK_FALSE(h.iommu->endpoint_stats(3)->domain);
    REQUIRE(h.map(1, 0x900'0000, 0x900'0fff, kRam) == S(Status::Ok));
    REQUIRE(h.unmap(1, 0x800'0000, 0x800'0fff) == S(Status::Ok));
    CHECK(h.attach(3, 1) == S(Status::Ok));  // compatible now
}

TEST_CASE("D22 an ATTACH that is not rejected attaches: the endpoint translates through the domain") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(2, 9) == S(Status::Ok));
    REQUIRE(h.map(9, 0x10'0000, 0x10'1fff, kRam + 0x3000) == S(Status::Ok));
    CHECK(h.gpa_of(2, 0x10'1004) == kRam + 0x4004);
    CHECK(h.iommu->endpoint_stats(2)->domain == 9u);
}

TEST_CASE("D23 ATTACH to an unknown domain creates it, as a bypass domain with ATTACH_F_BYPASS") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 11) == S(Status::Ok));
    REQUIRE(h.attach(2, 12, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK_FALSE(h.iommu->domain_stats(11)->bypass);
    CHECK(h.iommu->domain_stats(12)->bypass);
    CHECK_FALSE(h.gpa_of(1, kRam));            // empty translating domain
    CHECK(h.gpa_of(2, kRam + 8) == kRam + 8);  // bypass domain
}

// ---- DETACH ---------------------------------------------------------------------------------------

TEST_CASE("D24 DETACH ignores its reserved bytes") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.simple(detach_req(1, 1, 0xff)) == S(Status::Ok));
    CHECK_FALSE(h.iommu->endpoint_stats(1)->domain);
}

TEST_CASE("D25 DETACH of an unknown endpoint is rejected with S_NOENT") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.detach(42, 1) == S(Status::NoEnt));
}

TEST_CASE("D26 DETACH from a domain the endpoint is not in, or an unknown domain, answers S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.detach(1, 1) == S(Status::Inval));  // unattached, domain unknown
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.attach(2, 2) == S(Status::Ok));
    CHECK(h.detach(1, 2) == S(Status::Inval));  // domain exists, endpoint elsewhere
    CHECK(h.iommu->endpoint_stats(1)->domain == 1u);
}

TEST_CASE("D27 once detached, an endpoint cannot reach the domain's mappings") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.attach(2, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0, kPage - 1, kRam) == S(Status::Ok));
    REQUIRE(h.gpa_of(1, 0) == kRam);
    REQUIRE(h.detach(1, 1) == S(Status::Ok));
    // bypass = 1 (the default): unattached means identity, not the old mapping...
    CHECK(h.gpa_of(1, 0) == 0u);
    CHECK(h.gpa_of(2, 0) == kRam);     // ...and the other member still translates
    h.driver->write_config(36, 1, 0);  // bypass = 0: blocked
    CHECK_FALSE(h.gpa_of(1, 0));
}

TEST_CASE("D28 when the last endpoint leaves, the domain dies with its mappings and its ID is free") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 6) == S(Status::Ok));
    REQUIRE(h.attach(2, 6) == S(Status::Ok));
    REQUIRE(h.map(6, 0, kPage - 1, kRam) == S(Status::Ok));
    REQUIRE(h.detach(1, 6) == S(Status::Ok));
    CHECK(h.iommu->domain_stats(6)->live_mappings == 1);
    REQUIRE(h.detach(2, 6) == S(Status::Ok));
    CHECK_FALSE(h.iommu->domain_stats(6));
    CHECK(h.iommu->stats().live_mappings == 0);
    CHECK(h.map(6, 0, kPage - 1, kRam) == S(Status::NoEnt));
    REQUIRE(h.attach(1, 6, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));  // reused, even as bypass
    CHECK(h.iommu->domain_stats(6)->bypass);
}

// ---- MAP ------------------------------------------------------------------------------------------

TEST_CASE("D29 MAP with virt_start, phys_start or virt_end + 1 off the granule answers S_RANGE") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0x800, 0x1fff, kRam) == S(Status::Range));
    CHECK(h.map(1, 0x1000, 0x1ffe, kRam) == S(Status::Range));
    CHECK(h.map(1, 0x1000, 0x1fff, kRam + 0x10) == S(Status::Range));
    CHECK(ranges(h, 1).empty());
    CHECK(h.map(1, 0x1000, 0x1fff, kRam) == S(Status::Ok));
}

TEST_CASE("D30 MAP overlapping an existing mapping (exactly, partly or around it) answers S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x4000, 0x7fff, kRam) == S(Status::Ok));
    CHECK(h.map(1, 0x4000, 0x7fff, kRam) == S(Status::Inval));  // exact
    CHECK(h.map(1, 0x2000, 0x4fff, kRam) == S(Status::Inval));  // overlaps the start
    CHECK(h.map(1, 0x7000, 0x8fff, kRam) == S(Status::Inval));  // overlaps the end
    CHECK(h.map(1, 0x5000, 0x5fff, kRam) == S(Status::Inval));  // inside
    CHECK(h.map(1, 0x0000, 0xffff, kRam) == S(Status::Inval));  // around
    CHECK(ranges(h, 1) == Ranges{{0x4000, 0x7fff}});
    CHECK(h.map(1, 0x3000, 0x3fff, kRam) == S(Status::Ok));  // adjacent is fine
    CHECK(h.map(1, 0x8000, 0x8fff, kRam) == S(Status::Ok));
}

TEST_CASE("D31 MAP with an unknown flag answers S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0, kPage - 1, kRam, 0x8) == S(Status::Inval));
    CHECK(h.map(1, 0, kPage - 1, kRam, kRW | 0x100) == S(Status::Inval));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D32 MAP into an unknown domain answers S_NOENT") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.map(5, 0, kPage - 1, kRam) == S(Status::NoEnt));
}

TEST_CASE("D33 MAP into a bypass domain answers S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK(h.map(5, 0, kPage - 1, kRam) == S(Status::Inval));
    CHECK(ranges(h, 5).empty());
}

TEST_CASE("D34 writes need MAP_F_WRITE and reads need MAP_F_READ") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x0000, 0x0fff, kRam, VIRTIO_IOMMU_MAP_F_READ) == S(Status::Ok));
    REQUIRE(h.map(1, 0x1000, 0x1fff, kRam, VIRTIO_IOMMU_MAP_F_WRITE) == S(Status::Ok));
    REQUIRE(h.map(1, 0x2000, 0x2fff, kRam, 0) == S(Status::Ok));
    CHECK(h.gpa_of(1, 0x10, Access::Read) == kRam + 0x10);
    CHECK_FALSE(h.gpa_of(1, 0x10, Access::Write));
    CHECK(h.gpa_of(1, 0x1010, Access::Write) == kRam + 0x10);
    CHECK_FALSE(h.gpa_of(1, 0x1010, Access::Read));
    CHECK_FALSE(h.gpa_of(1, 0x2010, Access::Read));
    CHECK_FALSE(h.gpa_of(1, 0x2010, Access::Write));
    // Also through the DMA path a device uses: a write through a read-only mapping moves nothing.
    vmm::DmaMemory dma(h.ram().memory(), h.iommu->translator(1));
    h.ram().fill(kRam, 16, 0x11);
    const std::vector<std::uint8_t> data(16, 0x22);
    CHECK_FALSE(dma.write(vmm::Iova{0}, data));
    CHECK(h.ram().read_bytes(kRam, 16) == std::vector<std::uint8_t>(16, 0x11));
    std::vector<std::uint8_t> back(16);
    CHECK(dma.read(vmm::Iova{0}, back));
    CHECK(back == std::vector<std::uint8_t>(16, 0x11));
}

TEST_CASE("D35 MAP honours input_range, MMIO only with F_MMIO, and PA = VA - virt_start + phys_start") {
    Options options;
    options.config.window.input_first = 0x10000;
    options.config.window.input_last = 0xffff'ffff;
    Harness h(options);
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_MMIO)));
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0x0f000, 0x10fff, kRam) == S(Status::Range));            // starts below
    CHECK(h.map(1, 0xffff'f000, 0x1'0000'0fff, kRam) == S(Status::Range));  // ends above
    CHECK(h.unmap(1, 0, 0x1'0000'0000) == S(Status::Range));
    CHECK(h.map(1, 0x20000, 0x20fff, 0x0900'0000, VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO) ==
          S(Status::Inval));
    REQUIRE(h.map(1, 0x20000, 0x21fff, kRam + 0x5000) == S(Status::Ok));
    CHECK(h.gpa_of(1, 0x20000) == kRam + 0x5000);  // inclusive bounds
    CHECK(h.gpa_of(1, 0x21fff) == kRam + 0x6fff);
    CHECK_FALSE(h.gpa_of(1, 0x22000));
    CHECK_FALSE(h.gpa_of(1, 0x1ffff));
    // Without F_INPUT_RANGE negotiated the window is the whole 64-bit space.
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_INPUT_RANGE)));
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0, 0xfff, kRam) == S(Status::Ok));
    CHECK(h.map(1, 0xffff'ffff'ffff'f000, ~std::uint64_t{0}, kRam) == S(Status::Ok));
}

TEST_CASE("MAP with virt_end <= virt_start answers S_INVAL; a phys range that wraps answers S_RANGE") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0x10, 0x10, kRam) == S(Status::Inval));
    CHECK(h.map(1, 0x10, 0x0f, kRam) == S(Status::Inval));
    CHECK(h.map(1, 0x0, 0x10, ~std::uint64_t{0} - 4) == S(Status::Range));
    CHECK(ranges(h, 1).empty());
}

// ---- UNMAP ----------------------------------------------------------------------------------------

TEST_CASE("D36 UNMAP with non-zero reserved bytes is accepted and performed") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0, kPage - 1, kRam) == S(Status::Ok));
    CHECK(h.simple(unmap_req(1, 0, kPage - 1, 0x7)) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D37 UNMAP of an unknown domain answers S_NOENT") {
    Harness h;
    REQUIRE(h.start());
    CHECK(h.unmap(3, 0, kPage - 1) == S(Status::NoEnt));
}

TEST_CASE("D38 UNMAP on a bypass domain answers S_INVAL") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 3, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK(h.unmap(3, 0, kPage - 1) == S(Status::Inval));
}

TEST_CASE("D39 UNMAP never splits a mapping and checks the whole range before any side effect") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0x1000, 0x1fff, kRam) == S(Status::Ok));
    REQUIRE(h.map(1, 0x2000, 0x3fff, kRam) == S(Status::Ok));
    REQUIRE(h.map(1, 0x8000, 0x9fff, kRam) == S(Status::Ok));
    // The first two mappings could go, but the range ends inside the third: nothing is removed.
    CHECK(h.unmap(1, 0x1000, 0x8fff) == S(Status::Range));
    // Starting inside a mapping is a split too.
    CHECK(h.unmap(1, 0x3000, 0x9fff) == S(Status::Range));
    CHECK(h.unmap(1, 0x1800, 0x1fff) == S(Status::Range));
    CHECK(ranges(h, 1) == Ranges{{0x1000, 0x1fff}, {0x2000, 0x3fff}, {0x8000, 0x9fff}});
    CHECK(h.gpa_of(1, 0x1000) == kRam);
    CHECK(h.gpa_of(1, 0x9fff) == kRam + 0x1fff);
}

TEST_CASE("D40 UNMAP spec example 1: nothing mapped, unmap (0,4) succeeds") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {}, 0, 4) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D40 UNMAP spec example 2: a=(0,9), unmap (0,9) removes a") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 9}}, 0, 9) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D40 UNMAP spec example 3: a=(0,4), b=(5,9), unmap (0,9) removes a and b") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 4}, {5, 9}}, 0, 9) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D39 UNMAP spec example 4: a=(0,9), unmap (0,4) would split a: S_RANGE, nothing removed") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 9}}, 0, 4) == S(Status::Range));
    CHECK(ranges(h, 1) == Ranges{{0, 9}});
    CHECK(h.gpa_of(1, 9) == kRam + 9);
}

TEST_CASE("D40 UNMAP spec example 5: a=(0,4), b=(5,9), unmap (0,4) removes a only") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 4}, {5, 9}}, 0, 4) == S(Status::Ok));
    CHECK(ranges(h, 1) == Ranges{{5, 9}});
}

TEST_CASE("D40 UNMAP spec example 6: a=(0,4), unmap (0,9) removes a, spilling over unmapped space") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 4}}, 0, 9) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
}

TEST_CASE("D40 UNMAP spec example 7: a=(0,4), b=(10,14), unmap (0,14) removes both across the gap") {
    Harness h(byte_granule());
    REQUIRE(h.start());
    CHECK(unmap_example(h, 1, {{0, 4}, {10, 14}}, 0, 14) == S(Status::Ok));
    CHECK(ranges(h, 1).empty());
    CHECK_FALSE(h.gpa_of(1, 12));
}

// ---- Linux-driven behaviour ------------------------------------------------------------------------

TEST_CASE("L5 several endpoints share translating and bypass domains") {
    Options options;
    options.endpoints.push_back({3, {}, nullptr});
    Harness h(options);
    REQUIRE(h.start());
    for (std::uint32_t ep : {1u, 2u}) REQUIRE(h.attach(ep, 1) == S(Status::Ok));
    REQUIRE(h.map(1, 0, kPage - 1, kRam) == S(Status::Ok));
    CHECK(h.gpa_of(1, 4) == kRam + 4);
    CHECK(h.gpa_of(2, 4) == kRam + 4);
    REQUIRE(h.attach(3, 2, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    REQUIRE(h.attach(2, 2, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));
    CHECK(h.iommu->domain_stats(2)->endpoints.size() == 2);
    CHECK(h.gpa_of(2, kRam + 4) == kRam + 4);
    CHECK(h.gpa_of(3, kRam + 4) == kRam + 4);
    CHECK(h.gpa_of(1, 4) == kRam + 4);  // 1 is still isolated in domain 1
}

TEST_CASE("L6 Linux's move-and-replay works: implicit detach frees the old domain's mappings") {
    Harness h;
    REQUIRE(h.start());
    // Linux: domain A gets endpoint 1 and mappings; the endpoint moves to B without DETACH; later
    // a fresh domain reuses A's ID and Linux replays its own recorded mappings into it.
    REQUIRE(h.attach(1, 10) == S(Status::Ok));
    for (std::uint64_t i = 0; i < 8; ++i) REQUIRE(h.map(10, i * kPage, i * kPage + kPage - 1, kRam) == S(Status::Ok));
    REQUIRE(h.attach(1, 11) == S(Status::Ok));
    REQUIRE(h.attach(1, 10) == S(Status::Ok));
    for (std::uint64_t i = 0; i < 8; ++i) CHECK(h.map(10, i * kPage, i * kPage + kPage - 1, kRam) == S(Status::Ok));
    CHECK_FALSE(h.iommu->domain_stats(11));
}

TEST_CASE("L7 many requests per kick are processed in ring order") {
    Harness h;
    REQUIRE(h.start());
    h.post(attach_req(1, 1), 4);
    h.post(map_req(1, 0, kPage - 1, kRam, kRW), 4);
    h.post(map_req(1, 0, kPage - 1, kRam, kRW), 4);  // overlaps the previous one
    h.post(unmap_req(1, 0, kPage - 1), 4);
    h.post(map_req(1, 0, kPage - 1, kRam + kPage, kRW), 4);  // fine again after the UNMAP
    for (std::uint64_t i = 1; i <= 20; ++i) h.post(map_req(1, i * kPage, i * kPage + kPage - 1, kRam, kRW), 4);
    h.kick();
    const auto replies = h.collect();
    REQUIRE(replies.size() == 25);
    const std::vector<std::uint8_t> expected_head{S(Status::Ok), S(Status::Ok), S(Status::Inval), S(Status::Ok),
                                                  S(Status::Ok)};
    for (std::size_t i = 0; i < replies.size(); ++i) {
        CAPTURE(i);
        CHECK(replies[i].used == 4);
        CHECK(replies[i].status() == (i < 5 ? expected_head[i] : S(Status::Ok)));
    }
    CHECK(h.gpa_of(1, 0) == kRam + kPage);
    CHECK(h.iommu->domain_stats(1)->live_mappings == 21);
}

TEST_CASE("L8 requests complete before the kick returns (the guest vCPU spins for them)") {
    Harness h;
    REQUIRE(h.start());
    for (int i = 0; i < 3; ++i) h.post(attach_req(1, 1), 4);
    const std::uint16_t before = h.driver->used_idx(0);
    h.kick();
    CHECK(static_cast<std::uint16_t>(h.driver->used_idx(0) - before) == 3);
}

TEST_CASE("L12 domain IDs are accepted anywhere in domain_range, and only there") {
    Options options;
    options.config.domain_first = 1;
    options.config.domain_last = 0x1ff;
    Harness h(options);
    REQUIRE(h.start());
    CHECK(h.attach(1, 1, VIRTIO_IOMMU_ATTACH_F_BYPASS) == S(Status::Ok));  // newer Linux: start = bypass
    CHECK(h.attach(2, 0x1ff) == S(Status::Ok));
    CHECK(h.attach(2, 0) == S(Status::Range));
    CHECK(h.attach(2, 0x200) == S(Status::Range));
    CHECK(h.detach(2, 0x200) == S(Status::Range));
    CHECK(h.map(0x200, 0, kPage - 1, kRam) == S(Status::Range));
    CHECK(h.unmap(0, 0, kPage - 1) == S(Status::Range));
    CHECK(h.iommu->endpoint_stats(2)->domain == 0x1ffu);
    // Without F_DOMAIN_RANGE negotiated every 32-bit ID is valid.
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_DOMAIN_RANGE)));
    CHECK(h.attach(2, 0xffff'ffff) == S(Status::Ok));
    CHECK(h.attach(1, 0) == S(Status::Ok));
}

TEST_CASE("L13 huge identity MAPs covering the whole input range are one mapping each") {
    Harness h;
    REQUIRE(h.start());
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    const std::uint64_t last = h.options_.config.window.input_last;
    // Linux's identity domain without BYPASS_CONFIG: IOVA == PA around a reserved hole.
    CHECK(h.map(1, 0, 0x7ff'ffff, 0) == S(Status::Ok));
    CHECK(h.map(1, 0x810'0000, last, 0x810'0000) == S(Status::Ok));
    CHECK(h.iommu->domain_stats(1)->live_mappings == 2);
    CHECK(h.gpa_of(1, kRam + 0x123) == kRam + 0x123);
    CHECK(h.gpa_of(1, last) == last);
    CHECK_FALSE(h.gpa_of(1, 0x800'0000));
    CHECK(h.unmap(1, 0, last) == S(Status::Ok));
    // Without INPUT_RANGE: the full 64-bit space in one MAP (size 2^64 is not even representable).
    REQUIRE(h.start(kAll & ~feature(VIRTIO_IOMMU_F_INPUT_RANGE)));
    REQUIRE(h.attach(1, 1) == S(Status::Ok));
    CHECK(h.map(1, 0, ~std::uint64_t{0}, 0) == S(Status::Ok));
    CHECK(h.gpa_of(1, ~std::uint64_t{0}) == ~std::uint64_t{0});
    CHECK(h.translate(1, kRam, 0x1000, Access::Write)->size() == 1);
}
