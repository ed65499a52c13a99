// Refused MAPs of a VFIO endpoint reach the guest as MAPPING fault records on the eventq (guests
// since Linux 6.8 never read a MAP's status), rate-limited, and counted; the status itself stays
// S_NOMEM. So do the runs of a shadowed table the container cannot take (CONFORMANCE.md D73).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "devices/vfio/dma_mapper.hpp"
#include "devices/vfio/group.hpp"
#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/mock_vfio_host.hpp"
#include "tests/support/stage1_tables.hpp"
#include "vmm/base/log.hpp"

namespace {

using devices::vfio::Container;
using devices::vfio::DmaMapper;
using devices::vfio::Group;
using devices::vfio::testing::MockVfioHost;
using iommu::Status;
using viommu_test::S;

constexpr std::uint64_t kRam = support::FakeGuestRam::kDefaultBase;
constexpr std::uint64_t kPage = 4096;
constexpr iommu::EndpointId kEndpoint = 8;

// A VFIO endpoint whose container takes `entry_limit` host entries, behind the virtio-iommu.
struct VfioBehindViommu {
    MockVfioHost host;
    vmm::GuestMemory memory{std::vector<vmm::GuestRange>{*vmm::GuestRange::make(vmm::GuestPhysAddr{kRam}, 8 << 20)}};
    std::shared_ptr<Container> container;
    std::shared_ptr<Group> group;
    std::shared_ptr<DmaMapper> mapper;
    std::unique_ptr<viommu_test::Harness> h;

    explicit VfioBehindViommu(std::uint32_t entry_limit, bool tables = false) {
        host.add_device("0000:00:01.0", 1);
        host.set_dma_limit(entry_limit);
        container = std::make_shared<Container>(host, "container of group 1");
        group = std::make_shared<Group>(host, 1, container);
        mapper = std::make_shared<DmaMapper>(memory, host);
        mapper->add_endpoint(kEndpoint, container);
        viommu_test::Options options;
        options.config.tables = tables;
        options.endpoints.push_back({kEndpoint, {}, mapper});
        h = std::make_unique<viommu_test::Harness>(options);
    }
    std::uint8_t map_page(std::uint64_t page) {
        return h->map(1, page * kPage, page * kPage + kPage - 1, kRam + page * kPage);
    }
};

// What `body` writes to stderr (lkvm's log, at least its warnings: tests/main.cpp silences them).
template <typename Body>
std::string stderr_of(Body body) {
    const vmm::LogLevel before = vmm::log_enabled(vmm::LogLevel::Debug) ? vmm::LogLevel::Debug : vmm::LogLevel::Error;
    vmm::set_log_level(vmm::LogLevel::Warn);
    std::fflush(stderr);
    std::FILE* capture = std::tmpfile();
    REQUIRE(capture != nullptr);
    const int saved = ::dup(STDERR_FILENO);
    ::dup2(::fileno(capture), STDERR_FILENO);
    body();
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    vmm::set_log_level(before);
    std::string text;
    std::rewind(capture);
    for (int c; (c = std::fgetc(capture)) != EOF;) text.push_back(static_cast<char>(c));
    std::fclose(capture);
    return text;
}

}  // namespace

TEST_CASE("Near the VFIO budget lkvm warns once with advice that works, not a granule Linux refuses") {
    VfioBehindViommu v(10);
    REQUIRE(v.h->start());
    REQUIRE(v.h->attach(kEndpoint, 1) == S(Status::Ok));
    const std::string log = stderr_of([&] {
        for (std::uint64_t page = 0; page < 10; ++page) CHECK(v.map_page(page) == S(Status::Ok));
    });
    CAPTURE(log);
    CHECK(log.find("DMA budget nearly used: 9 of 10 host entries") != std::string::npos);
    CHECK(log.find("DMA budget nearly used", log.find("DMA budget nearly used") + 1) == std::string::npos);  // once
    for (const char* advice : {"Before the next start of lkvm raise the module parameter dma_entry_limit",
                               "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit", "or ulimit -l",
                               "leave it out of the vIOMMU (--viommu virtio)", "iommu.passthrough=1"})
        CHECK_MESSAGE(log.find(advice) != std::string::npos, advice);
    CHECK(log.find("page_size") == std::string::npos);
}

TEST_CASE("A MAP refused for the VFIO budget answers S_NOMEM and posts a MAPPING fault for the endpoint and IOVA") {
    VfioBehindViommu v(4);
    REQUIRE(v.h->start());
    for (int i = 0; i < 4; ++i) v.h->post_event_buffer();
    REQUIRE(v.h->attach(kEndpoint, 1) == S(Status::Ok));
    for (std::uint64_t page = 0; page < 4; ++page) REQUIRE(v.map_page(page) == S(Status::Ok));
    CHECK_FALSE(v.h->next_event());  // nothing refused yet
    // Read-only and read-write refusals, each one record with the refused mapping's flags.
    CHECK(v.h->map(1, 0x10 * kPage, 0x11 * kPage - 1, kRam, VIRTIO_IOMMU_MAP_F_READ) == S(Status::NoMem));
    CHECK(v.map_page(0x20) == S(Status::NoMem));
    for (std::uint64_t iova : {0x10 * kPage, 0x20 * kPage}) {
        CAPTURE(iova);
        auto event = v.h->next_event();
        REQUIRE(event);
        CHECK(event->used == 24);
        CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
        CHECK(event->fault.endpoint == kEndpoint);
        CHECK(event->fault.address == iova);
        const std::uint32_t rw =
            iova == 0x10 * kPage ? VIRTIO_IOMMU_FAULT_F_READ : VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_WRITE;
        CHECK(event->fault.flags == (VIRTIO_IOMMU_FAULT_F_ADDRESS | rw));
    }
    CHECK_FALSE(v.h->next_event());
    // Two buffers left: two more refusals reported, the third dropped for lack of a buffer.
    for (std::uint64_t page = 0x30; page < 0x33; ++page) CHECK(v.map_page(page) == S(Status::NoMem));
    const auto s = v.h->device->stats();
    CHECK(s.map_refusals == 5);
    CHECK(s.refusals_reported == 4);
    CHECK(s.refusals_no_buffer == 1);
    CHECK(s.refusals_rate_limited == 0);
    CHECK(v.mapper->stats().spaces[0].budget_refusals == 5);
    // The guest goes on: an UNMAP makes room and the MAP succeeds, with no record.
    CHECK(v.h->unmap(1, 0, kPage - 1) == S(Status::Ok));
    CHECK(v.map_page(0x40) == S(Status::Ok));
    CHECK(v.h->device->stats().map_refusals == 5);
}

TEST_CASE("A flood of refused MAPs is rate-limited: refusals = reported + rate-limited + no buffer") {
    VfioBehindViommu v(1);
    REQUIRE(v.h->start());
    for (int i = 0; i < 60; ++i) v.h->post_event_buffer();
    REQUIRE(v.h->attach(kEndpoint, 1) == S(Status::Ok));
    REQUIRE(v.map_page(0) == S(Status::Ok));
    for (std::uint64_t page = 1; page <= 200; ++page) CHECK(v.map_page(page) == S(Status::NoMem));
    const auto s = v.h->device->stats();
    CHECK(s.map_refusals == 200);
    CHECK(s.refusals_rate_limited > 0);  // 200 in far less than the 20 s 10 per second would need
    CHECK(s.refusals_reported < 60);     // the eventq is never drained by the flood
    CHECK(s.map_refusals == s.refusals_reported + s.refusals_rate_limited + s.refusals_no_buffer);
    std::uint64_t events = 0;
    while (v.h->next_event()) ++events;
    CHECK(events == s.refusals_reported);
}

TEST_CASE("MAPs refused by the model itself are reported too; a MAP into no domain names no endpoint") {
    VfioBehindViommu v(16);
    REQUIRE(v.h->start());
    for (int i = 0; i < 4; ++i) v.h->post_event_buffer();
    REQUIRE(v.h->attach(kEndpoint, 1) == S(Status::Ok));
    REQUIRE(v.map_page(0) == S(Status::Ok));
    CHECK(v.map_page(0) == S(Status::Inval));  // overlaps
    auto event = v.h->next_event();
    REQUIRE(event);
    CHECK(event->fault.endpoint == kEndpoint);
    CHECK(event->fault.address == 0);
    CHECK(v.h->map(7, 0, kPage - 1, kRam) == S(Status::NoEnt));
    CHECK_FALSE(v.h->next_event());
    CHECK(v.h->device->stats().map_refusals == 1);
}

TEST_CASE(
    "D73 a shadowed run beyond the VFIO budget: S_NOMEM, a MAPPING fault, counted; contiguous leaves take one entry") {
    VfioBehindViommu v(2, true);
    REQUIRE(v.h->start());
    v.h->post_event_buffer();
    support::Stage1Tables tables(v.h->ram(), 12, 48);
    const viommu_test::TableFields fields{LKVM_VIOMMU_FMT_ARM_LPAE_S1, 1, tables.tcr(), tables.root(), 0};
    REQUIRE(v.h->attach_table(kEndpoint, 1, fields) == S(Status::Ok));
    // 16 contiguous pages: one run, one VFIO entry.
    for (std::uint64_t page = 0; page < 16; ++page) tables.map(0x10'0000 + page * kPage, kRam + page * kPage);
    REQUIRE(v.h->invalidate(1, viommu_test::invalidate_range(0x10'0000, 16)) == S(Status::Ok));
    CHECK(v.host.dma_entries() == 1);
    // Two runs more (the second page's output does not continue the first's): the budget takes one.
    tables.map(0x20'0000, kRam + 0x40'0000);
    tables.map(0x20'1000, kRam + 0x60'0000, 3, support::kDescAf | support::kDescReadOnly);
    CHECK(v.h->invalidate(1, viommu_test::invalidate_range(0x20'0000, 2)) == S(Status::NoMem));
    CHECK(v.host.dma_entries() == 2);
    auto event = v.h->next_event();
    REQUIRE(event);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK(event->fault.endpoint == kEndpoint);
    CHECK(event->fault.address == 0x20'1000);
    CHECK(event->fault.flags == (VIRTIO_IOMMU_FAULT_F_ADDRESS | VIRTIO_IOMMU_FAULT_F_READ));
    CHECK(v.mapper->stats().spaces[0].budget_refusals == 1);
    CHECK(v.h->device->stats().map_refusals == 1);
    CHECK(v.h->iommu->domain_stats(1)->shadow.refusals == 1);
    // The guest unmaps the first run: room for the refused one at the next INVALIDATE.
    for (std::uint64_t page = 0; page < 16; ++page) tables.unmap(0x10'0000 + page * kPage);
    REQUIRE(v.h->invalidate(1) == S(Status::Ok));
    CHECK(v.host.dma_entries() == 2);
    REQUIRE(v.h->detach(kEndpoint, 1) == S(Status::Ok));
    CHECK(v.host.dma_entries() == 0);
}
