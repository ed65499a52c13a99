// iommu::Iommu with external IOMMUs (MapListener, as the VFIO DmaMapper): fan-out of every change, rollback
// of a failed MAP/UNMAP so that the domain and every backend end up as before the request, and an
// endpoint whose external IOMMU cannot follow an ATTACH/DETACH/reset ending detached and blocked;
// resource caps answered with S_NOMEM; counters and the mapping dump.
#include "iommu/iommu.hpp"

#include <doctest/doctest.h>

#include <random>

#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/mock_iommu_backend.hpp"

using iommu::ListenerResult;
using iommu::Status;
using iommu::testing::MockIommuBackend;
using Op = MockIommuBackend::Op;
using Mode = MockIommuBackend::Mode;

namespace {

constexpr std::uint32_t kRW = iommu::kMapRead | iommu::kMapWrite;
constexpr std::uint64_t kPage = 4096;

struct Model {
    std::shared_ptr<MockIommuBackend> backend = std::make_shared<MockIommuBackend>();
    std::shared_ptr<iommu::Iommu> iommu;
    explicit Model(iommu::Limits limits = {}, std::vector<iommu::EndpointId> external = {10, 11, 12})
        : iommu(std::make_shared<iommu::Iommu>(limits)) {
        iommu->set_geometry(iommu::Geometry{});
        for (iommu::EndpointId id : external) iommu->add_endpoint({id, {}, backend});
        iommu->add_endpoint({1, {}, nullptr});  // emulated
    }
    Status map_page(iommu::DomainId domain, std::uint64_t page) {
        return iommu->map(domain, page * kPage, page * kPage + kPage - 1, 0x4000'0000 + page * kPage, kRW);
    }
};

// Every listener endpoint's host state mirrors the model: same domain, same mappings.
void check_mirrors(const Model& m) {
    for (const auto& entry : m.backend->states()) {
        // Named copies, not a structured binding: CAPTURE's lambda may not capture one (C++17).
        const iommu::EndpointId id = entry.first;
        const auto& state = entry.second;
        CAPTURE(id);
        const auto stats = m.iommu->endpoint_stats(id);
        REQUIRE(stats);
        if (!stats->domain) {
            CHECK(state.mode == (m.iommu->unattached_bypass() && !stats->blocked ? Mode::Bypass : Mode::Blocked));
            CHECK(state.mappings.empty());
            continue;
        }
        CHECK(state.mode == Mode::Domain);
        CHECK(state.domain == *stats->domain);
        const auto mappings = *m.iommu->mappings(*stats->domain);
        CHECK(state.mappings.size() == mappings.size());
        for (const iommu::Mapping& mapping : mappings) {
            auto it = state.mappings.find(mapping.first.value);
            CHECK((it != state.mappings.end() && it->second == mapping));
        }
    }
    CHECK(m.backend->violations() == 0);
}

}  // namespace

TEST_CASE("MAP fans out to every external endpoint of the domain; a failure undoes it on the others") {
    for (ListenerResult failure : {ListenerResult::NoMemory, ListenerResult::Failed, ListenerResult::Invalid}) {
        Model m;
        for (iommu::EndpointId ep : {10u, 11u, 12u, 1u}) REQUIRE(m.iommu->attach(ep, 5, 0) == Status::Ok);
        REQUIRE(m.map_page(5, 1) == Status::Ok);
        CHECK(m.backend->count(Op::Map) == 3);
        const auto before = m.backend->states();
        m.backend->fail_after(2, failure, Op::Map);  // the third endpoint refuses
        const Status expected = failure == ListenerResult::NoMemory  ? Status::NoMem
                                : failure == ListenerResult::Invalid ? Status::Inval
                                                                     : Status::DevErr;
        CHECK(m.map_page(5, 2) == expected);
        CHECK(m.backend->states() == before);
        CHECK(m.iommu->mappings(5)->size() == 1);
        CHECK(m.iommu->stats().rollback_failures == 0);
        check_mirrors(m);
    }
}

TEST_CASE("UNMAP failing on one endpoint re-maps what the others and it already removed") {
    Model m;
    for (iommu::EndpointId ep : {10u, 11u, 12u}) REQUIRE(m.iommu->attach(ep, 5, 0) == Status::Ok);
    for (std::uint64_t page = 0; page < 4; ++page) REQUIRE(m.map_page(5, page) == Status::Ok);
    const auto before = m.backend->states();
    m.backend->fail_after(6, ListenerResult::Failed, Op::Unmap);  // 4 on ep 10, 2 on ep 11, then fail
    CHECK(m.iommu->unmap(5, 0, 4 * kPage - 1) == Status::DevErr);
    CHECK(m.backend->states() == before);
    CHECK(m.iommu->mappings(5)->size() == 4);
    check_mirrors(m);
    CHECK(m.iommu->unmap(5, 0, 4 * kPage - 1) == Status::Ok);  // the next attempt goes through
    check_mirrors(m);
}

TEST_CASE("ATTACH the external IOMMU cannot follow leaves the endpoint blocked, out of its old domain") {
    Model m;
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.iommu->attach(11, 2, 0) == Status::Ok);
    for (std::uint64_t page = 0; page < 3; ++page) REQUIRE(m.map_page(1, page) == Status::Ok);
    for (std::uint64_t page = 10; page < 15; ++page) REQUIRE(m.map_page(2, page) == Status::Ok);
    m.backend->set_budget(4);  // domain 2's five mappings do not fit the replay
    CHECK(m.iommu->attach(10, 2, 0) == Status::NoMem);
    CHECK_FALSE(m.iommu->endpoint_stats(10)->domain);
    CHECK(m.iommu->endpoint_stats(10)->blocked);
    CHECK_FALSE(m.iommu->domain_stats(1));  // domain 1 died with its last member (D28)
    CHECK(m.backend->state(10)->mode == Mode::Blocked);
    CHECK(m.backend->state(10)->mappings.empty());
    CHECK(m.iommu->stats().blocked_endpoints == 1);
    check_mirrors(m);
    m.backend->set_budget(100);
    // Failing at the implicit detach or at the attach step ends the same way.
    for (Op op : {Op::Detach, Op::Attach}) {
        REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
        REQUIRE(m.map_page(1, 0) == Status::Ok);
        m.backend->fail_after(0, ListenerResult::Failed, op);  // one-shot: the block succeeds
        CHECK(m.iommu->attach(10, 2, 0) == Status::DevErr);
        m.backend->clear_failures();
        CHECK_FALSE(m.iommu->endpoint_stats(10)->domain);
        CHECK(m.backend->state(10)->mode == Mode::Blocked);
        CHECK(m.iommu->stats().forced_detach_failures == 0);
        check_mirrors(m);
    }
    CHECK(m.iommu->attach(10, 2, 0) == Status::Ok);
    CHECK_FALSE(m.iommu->endpoint_stats(10)->blocked);
    check_mirrors(m);
}

TEST_CASE("ATTACH into a new domain failing at attach leaves no domain behind") {
    Model m;
    m.backend->fail_endpoint(10, Op::Attach, ListenerResult::Invalid);
    CHECK(m.iommu->attach(10, 7, 0) == Status::Inval);
    CHECK_FALSE(m.iommu->domain_stats(7));
    CHECK(m.iommu->endpoint_stats(10)->statuses[static_cast<int>(Status::Inval)] == 1);
    check_mirrors(m);
}

TEST_CASE("DETACH into bypass the external IOMMU refuses leaves the endpoint detached and blocked") {
    Model m;
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.map_page(1, 0) == Status::Ok);
    REQUIRE(m.iommu->set_unattached_bypass(true));
    m.backend->refuse_bypass(10);
    CHECK(m.iommu->detach(10, 1) == Status::NoMem);
    CHECK_FALSE(m.iommu->endpoint_stats(10)->domain);
    CHECK(m.iommu->endpoint_stats(10)->blocked);
    CHECK_FALSE(m.iommu->mappings(1));
    CHECK(m.backend->state(10)->mode == Mode::Blocked);
    CHECK(m.backend->state(10)->mappings.empty());
    check_mirrors(m);
    m.backend->clear_failures();
    CHECK(m.iommu->attach(10, 1, 0) == Status::Ok);  // the guest can attach it again
    check_mirrors(m);
}

TEST_CASE("A failed undo blocks that endpoint, so the host never keeps what the model dropped") {
    Model m;
    for (iommu::EndpointId ep : {10u, 11u}) REQUIRE(m.iommu->attach(ep, 5, 0) == Status::Ok);
    m.backend->fail_endpoint(11, Op::Map, ListenerResult::Failed);
    m.backend->fail_endpoint(10, Op::Unmap, ListenerResult::Failed);  // the undo on 10 fails too
    CHECK(m.map_page(5, 0) == Status::DevErr);
    CHECK(m.iommu->stats().rollback_failures == 1);
    CHECK(m.iommu->mappings(5)->empty());
    CHECK_FALSE(m.iommu->endpoint_stats(10)->domain);
    CHECK(m.iommu->endpoint_stats(11)->domain == 5u);
    CHECK(m.backend->state(10)->mappings.empty());
    m.backend->clear_failures();
    check_mirrors(m);
}

TEST_CASE("An exhausted backend budget (VFIO dma_entry_limit) answers S_NOMEM through the ring") {
    auto backend = std::make_shared<MockIommuBackend>();
    backend->set_budget(3);
    viommu_test::Harness h(viommu_test::with_backend(backend));
    REQUIRE(h.start());
    REQUIRE(h.attach(10, 1) == viommu_test::S(Status::Ok));
    for (std::uint64_t page = 0; page < 3; ++page)
        CHECK(h.map(1, page * kPage, page * kPage + kPage - 1, 0x4000'0000) == viommu_test::S(Status::Ok));
    CHECK(h.map(1, 3 * kPage, 4 * kPage - 1, 0x4000'0000) == viommu_test::S(Status::NoMem));
    CHECK(h.iommu->mappings(1)->size() == 3);
    CHECK(h.iommu->domain_stats(1)->statuses[static_cast<int>(Status::NoMem)] == 1);
    CHECK(backend->violations() == 0);
}

TEST_CASE("Unattached external endpoints follow bypass; one that cannot is blocked") {
    Model m;
    CHECK(m.backend->state(10)->mode == Mode::Blocked);
    REQUIRE(m.iommu->attach(12, 3, 0) == Status::Ok);
    CHECK(m.iommu->set_unattached_bypass(true));
    CHECK(m.backend->state(10)->mode == Mode::Bypass);
    CHECK(m.backend->state(11)->mode == Mode::Bypass);
    CHECK(m.backend->state(12)->mode == Mode::Domain);  // attached: unaffected
    CHECK(m.iommu->set_unattached_bypass(false));
    m.backend->refuse_bypass(11);
    CHECK_FALSE(m.iommu->set_unattached_bypass(true));
    CHECK(m.iommu->unattached_bypass());
    CHECK(m.backend->state(10)->mode == Mode::Bypass);
    CHECK(m.backend->state(11)->mode == Mode::Blocked);
    CHECK(m.iommu->endpoint_stats(11)->blocked);
    m.backend->clear_failures();
    check_mirrors(m);
    // Through the device: the config field takes the guest's value; the endpoint whose host
    // cannot bypass stays blocked until bypass is written again.
    auto backend = std::make_shared<MockIommuBackend>();
    viommu_test::Options options = viommu_test::with_backend(backend);
    options.config.boot_bypass = false;
    viommu_test::Harness h(options);
    REQUIRE(h.start());
    backend->refuse_bypass(10);
    h.driver->write_config(36, 1, 1);
    CHECK(h.config(36, 1) == 1);
    CHECK(backend->state(10)->mode == Mode::Blocked);
    backend->clear_failures();
    h.driver->write_config(36, 1, 0);
    h.driver->write_config(36, 1, 1);
    CHECK(backend->state(10)->mode == Mode::Bypass);
}

TEST_CASE("Device reset detaches external endpoints into the unattached state") {
    Model m;
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.iommu->attach(11, 2, VIRTIO_IOMMU_ATTACH_F_BYPASS) == Status::Ok);
    REQUIRE(m.map_page(1, 0) == Status::Ok);
    CHECK(m.backend->state(11)->domain_bypass);
    m.iommu->reset();
    for (iommu::EndpointId ep : {10u, 11u}) {
        CHECK(m.backend->state(ep)->mode == Mode::Blocked);
        CHECK(m.backend->state(ep)->mappings.empty());
    }
    check_mirrors(m);
}

TEST_CASE("Reset retries a failed external detach, and reports stale host state if it fails again") {
    // Regression (fuzz_virtio_iommu): a one-off detach failure during a device reset left the
    // endpoint's host IOMMU attached while the model had forgotten the domain.
    Model m;
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.map_page(1, 0) == Status::Ok);
    m.backend->fail_after(0, ListenerResult::Failed, Op::Detach);
    m.iommu->reset();
    CHECK(m.backend->state(10)->mode == Mode::Blocked);
    CHECK(m.iommu->stats().forced_detach_failures == 0);
    check_mirrors(m);
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    m.backend->fail_endpoint(10, Op::Detach, ListenerResult::Failed);
    m.iommu->reset();
    CHECK(m.iommu->stats().forced_detach_failures == 1);
    CHECK_FALSE(m.iommu->endpoint_stats(10)->domain);  // a reset is never refused
}

TEST_CASE("Regression: a reset whose bypass the external IOMMU refuses blocks the endpoint, dropping its domain") {
    Model m;
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.map_page(1, 0x100) == Status::Ok);
    REQUIRE(m.iommu->set_unattached_bypass(true));
    m.backend->refuse_bypass(10);
    m.iommu->reset();
    CHECK(m.backend->state(10)->mode == Mode::Blocked);
    CHECK(m.backend->state(10)->mappings.empty());
    CHECK(m.iommu->endpoint_stats(10)->blocked);
    CHECK(m.iommu->stats().forced_detach_failures == 0);
    check_mirrors(m);
}

TEST_CASE("Random requests with random backend failures keep every backend equal to the model") {
    Model m({}, {10, 11, 12, 13});
    std::mt19937 rng(12345);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    const ListenerResult failures[] = {ListenerResult::NoMemory, ListenerResult::Failed, ListenerResult::Invalid};
    for (int step = 0; step < 3000; ++step) {
        if (pick(2) == 0) m.backend->fail_after(static_cast<std::size_t>(pick(3)), failures[pick(3)]);
        const iommu::EndpointId ep = pick(5) == 0 ? 1 : 10 + pick(4);
        const iommu::DomainId domain = 1 + pick(4);
        const std::uint64_t page = static_cast<std::uint64_t>(pick(32));
        switch (pick(5)) {
            case 0: m.iommu->attach(ep, domain, domain == 4 ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0); break;
            case 1: m.iommu->detach(ep, domain); break;
            case 2:
                m.iommu->unmap(domain, page * kPage, (page + static_cast<std::uint64_t>(pick(4))) * kPage + kPage - 1);
                break;
            case 3: m.iommu->set_unattached_bypass(pick(2) == 1); break;
            default: m.map_page(domain, page); break;
        }
        m.backend->clear_failures();
        check_mirrors(m);
        if (m.backend->violations()) break;
    }
    CHECK(m.iommu->stats().rollback_failures == 0);
    CHECK(m.backend->failures() > 100);
}

TEST_CASE("Caps: mappings per domain, mappings overall and domains answer S_NOMEM") {
    iommu::Limits limits;
    limits.max_mappings_per_domain = 4;
    limits.max_mappings = 6;
    limits.max_domains = 2;
    Model m(limits, {10, 11, 12});
    REQUIRE(m.iommu->attach(10, 1, 0) == Status::Ok);
    REQUIRE(m.iommu->attach(11, 2, 0) == Status::Ok);
    CHECK(m.iommu->attach(12, 3, 0) == Status::NoMem);  // a third domain
    for (std::uint64_t page = 0; page < 4; ++page) CHECK(m.map_page(1, page) == Status::Ok);
    CHECK(m.map_page(1, 4) == Status::NoMem);  // per domain
    CHECK(m.map_page(2, 0) == Status::Ok);
    CHECK(m.map_page(2, 1) == Status::Ok);
    CHECK(m.map_page(2, 2) == Status::NoMem);        // overall
    CHECK(m.iommu->attach(11, 3, 0) == Status::Ok);  // moving the only member frees domain 2
    CHECK(m.iommu->stats().live_mappings == 4);
    check_mirrors(m);
}

TEST_CASE("Counters per domain and endpoint, and the mapping dump") {
    Model m;
    REQUIRE(m.iommu->attach(1, 3, 0) == Status::Ok);
    REQUIRE(m.map_page(3, 1) == Status::Ok);
    REQUIRE(m.map_page(3, 2) == Status::Ok);
    CHECK(m.map_page(3, 2) == Status::Inval);
    REQUIRE(m.iommu->unmap(3, 0, ~std::uint64_t{0} >> 16) == Status::Ok);
    REQUIRE(m.map_page(3, 7) == Status::Ok);
    const auto domain = *m.iommu->domain_stats(3);
    CHECK(domain.maps == 3);
    CHECK(domain.unmaps == 2);
    CHECK(domain.live_mappings == 1);
    CHECK(domain.statuses[static_cast<int>(Status::Ok)] == 4);
    CHECK(domain.statuses[static_cast<int>(Status::Inval)] == 1);
    CHECK(domain.endpoints == std::vector<iommu::EndpointId>{1});
    const auto endpoint = *m.iommu->endpoint_stats(1);
    CHECK(endpoint.attaches == 1);
    CHECK(endpoint.domain == 3u);
    CHECK_FALSE(endpoint.has_listener);
    CHECK(endpoint.maps == 3);
    CHECK(endpoint.unmaps == 2);
    CHECK(endpoint.live_mappings == 1);
    CHECK(m.iommu->stats().maps == 3);
    const std::string dump = m.iommu->dump();
    CHECK(dump.find("domain 3: 1 mappings") != std::string::npos);
    CHECK(dump.find("[0x7000, 0x7fff] -> 0x40007000 rw") != std::string::npos);
    CHECK(dump.find("endpoint 10: external unattached") != std::string::npos);
    // Counters follow the endpoint across domains; a joining endpoint starts from zero.
    REQUIRE(m.iommu->attach(10, 3, 0) == Status::Ok);
    REQUIRE(m.map_page(3, 9) == Status::Ok);
    REQUIRE(m.iommu->attach(1, 4, 0) == Status::Ok);
    REQUIRE(m.map_page(4, 1) == Status::Ok);
    CHECK(m.iommu->endpoint_stats(1)->maps == 5);
    CHECK(m.iommu->endpoint_stats(1)->live_mappings == 1);
    CHECK(m.iommu->endpoint_stats(10)->maps == 1);
    CHECK(m.iommu->endpoint_stats(10)->live_mappings == 2);
    m.iommu->reset();
    CHECK(m.iommu->endpoint_stats(1)->maps == 5);
    CHECK(m.iommu->endpoint_stats(1)->live_mappings == 0);
}
