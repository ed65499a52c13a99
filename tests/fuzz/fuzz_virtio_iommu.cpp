// libFuzzer target: the virtio-iommu request and event queues through the real virtio-mmio
// transport, with hostile guest memory (ring contents, descriptors, request bytes rewritten at
// will), endpoint faults from "other devices", config accesses, resets, and an external IOMMU
// that fails on demand. Besides ASan/UBSan findings it traps on broken invariants: used lengths
// that over-report, a backend that drifts from the model, counters that disagree.
#include <fuzzer/FuzzedDataProvider.h>
#include <linux/virtio_iommu.h>
#include <linux/virtio_mmio.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

#include "iommu/iommu.hpp"
#include "iommu/virtio_iommu.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/mock_iommu_backend.hpp"
#include "vmm/base/log.hpp"

namespace {

using iommu::testing::MockIommuBackend;
using support::Segment;

constexpr std::uint64_t kRamBase = support::FakeGuestRam::kDefaultBase;
constexpr std::uint64_t kRamSize = 1 << 20;
constexpr std::uint32_t kSlots = 16;
constexpr std::uint32_t kSlotSize = 1024;
constexpr std::uint32_t kProbeSize = iommu::VirtioIommuConfig{}.probe_size;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

// Every listener endpoint mirrors the model (rollback, or blocked when it cannot follow), and counters agree.
void check_invariants(const iommu::Iommu& model, const MockIommuBackend& backend) {
    require(backend.violations() == 0);
    std::uint64_t live = 0;
    for (const iommu::DomainStats& d : model.all_domain_stats()) live += d.live_mappings;
    const iommu::IommuStats totals = model.stats();
    require(live == totals.live_mappings);
    // Only when the host side reported it could not be kept in step (the mock fails undo calls
    // and retries too when told to) may it differ from the model.
    if (totals.rollback_failures || totals.forced_detach_failures) return;
    for (const auto& [id, state] : backend.states()) {
        const auto stats = model.endpoint_stats(id);
        require(stats.has_value());
        if (!stats->domain) {
            require(state.mode == (model.unattached_bypass() && !stats->blocked ? MockIommuBackend::Mode::Bypass
                                                                                : MockIommuBackend::Mode::Blocked));
            continue;
        }
        require(state.mode == MockIommuBackend::Mode::Domain && state.domain == *stats->domain);
        const auto mappings = model.mappings(*stats->domain);
        require(mappings.has_value() && mappings->size() == state.mappings.size());
    }
}

std::uint64_t pick_address(FuzzedDataProvider& fdp) {
    switch (fdp.ConsumeIntegralInRange<int>(0, 3)) {
        case 0: return fdp.ConsumeIntegral<std::uint64_t>();                                      // anywhere
        case 1: return fdp.ConsumeIntegralInRange<std::uint64_t>(0, 64) * 0x1000;                 // small pages
        case 2: return ~std::uint64_t{0} - fdp.ConsumeIntegralInRange<std::uint64_t>(0, 0x2000);  // the top
        default: return kRamBase + fdp.ConsumeIntegralInRange<std::uint64_t>(0, kRamSize);        // guest RAM
    }
}

// A request with fuzzed but mostly plausible fields, as wire bytes (the readable part).
std::vector<std::uint8_t> make_request(FuzzedDataProvider& fdp) {
    std::vector<std::uint8_t> bytes(72, 0);
    const std::uint8_t type =
        fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<std::uint8_t>(1, 5) : fdp.ConsumeIntegral<std::uint8_t>();
    bytes[0] = type;
    auto put32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(&bytes[at], &v, 4); };
    auto put64 = [&](std::size_t at, std::uint64_t v) { std::memcpy(&bytes[at], &v, 8); };
    const std::uint32_t small_id = fdp.ConsumeIntegralInRange<std::uint32_t>(0, 5);
    const std::uint32_t id = fdp.ConsumeBool() ? small_id : fdp.ConsumeIntegral<std::uint32_t>();
    put32(4, id);  // domain (or endpoint for PROBE)
    if (type == VIRTIO_IOMMU_T_ATTACH || type == VIRTIO_IOMMU_T_DETACH)
        put32(8, fdp.ConsumeIntegralInRange<std::uint32_t>(0, 6));  // endpoint
    const std::uint64_t start = pick_address(fdp);
    const std::uint64_t length = fdp.ConsumeBool() ? 0x1000 * fdp.ConsumeIntegralInRange<std::uint64_t>(1, 4)
                                                   : fdp.ConsumeIntegral<std::uint64_t>();
    if (type == VIRTIO_IOMMU_T_MAP || type == VIRTIO_IOMMU_T_UNMAP) {
        put64(8, start);
        put64(16, start + length - 1);
    }
    if (type == VIRTIO_IOMMU_T_MAP) {
        put64(24, pick_address(fdp));
        put32(32, fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<std::uint32_t>(0, 7)
                                    : fdp.ConsumeIntegral<std::uint32_t>());
    }
    if (type == VIRTIO_IOMMU_T_ATTACH) put32(12, fdp.ConsumeIntegralInRange<std::uint32_t>(0, 3));  // flags
    if (fdp.ConsumeIntegralInRange<int>(0, 15) == 0) bytes[fdp.ConsumeIntegralInRange<std::size_t>(0, 71)] ^= 0xff;
    bytes.resize(fdp.ConsumeBool() ? 72 : fdp.ConsumeIntegralInRange<std::size_t>(0, 72));
    return bytes;
}

class Session {
public:
    explicit Session(FuzzedDataProvider& fdp) : fdp_(fdp) {
        iommu::Limits limits;
        limits.max_domains = 4;
        limits.max_mappings_per_domain = 24;
        limits.max_mappings = 40;
        model_ = std::make_shared<iommu::Iommu>(limits);
        model_->add_endpoint({1, {{vmm::Iova{0x8000}, vmm::Iova{0x8fff}, iommu::ResvKind::Msi}}, nullptr});
        model_->add_endpoint({2, {}, nullptr});
        model_->add_endpoint({3, {{vmm::Iova{0x10000}, vmm::Iova{0x1ffff}, iommu::ResvKind::Reserved}}, backend_});
        model_->add_endpoint({4, {}, backend_});
        iommu::VirtioIommuConfig config;
        config.features = fdp_.ConsumeIntegral<std::uint64_t>() | (fdp_.ConsumeBool() ? ~std::uint64_t{0} : 0);
        config.boot_bypass = fdp_.ConsumeBool();
        config.window.page_size_mask =
            fdp_.ConsumeBool() ? ~std::uint64_t{0xfff} : (fdp_.ConsumeBool() ? ~std::uint64_t{0} : 0x10000);
        if (fdp_.ConsumeBool()) {
            config.window.input_first = 0x1000;
            config.window.input_last = 0xffff'ffff;
            config.domain_first = 1;
            config.domain_last = 3;
        }
        config.request_queue_size = static_cast<std::uint16_t>(1u << fdp_.ConsumeIntegralInRange<int>(0, 6));
        config.event_queue_size = static_cast<std::uint16_t>(1u << fdp_.ConsumeIntegralInRange<int>(0, 3));
        auto device = std::make_unique<iommu::VirtioIommu>(model_, config);
        device_ = device.get();
        driver_ = std::make_unique<support::FakeDriver>(std::move(device),
                                                        std::make_shared<support::FakeGuestRam>(kRamBase, kRamSize));
        forwarder_ = std::make_unique<iommu::FaultForwarder>(model_, driver_->transport(), *device_);
        slots_ = driver_->ram().alloc(kSlots * kSlotSize, 4096);
    }
    ~Session() { forwarder_.reset(); }

    void run() {
        start();
        for (int step = 0; step < 64 && fdp_.remaining_bytes() > 0; ++step) {
            const int which = fdp_.ConsumeIntegralInRange<int>(0, 13);
            if (std::getenv("FUZZ_IOMMU_TRACE")) std::fprintf(stderr, "op %d\n", which);
            op(which);
            check_invariants(*model_, *backend_);
        }
    }

private:
    void start() {
        const std::uint64_t wanted = fdp_.ConsumeBool() ? ~std::uint64_t{0} : fdp_.ConsumeIntegral<std::uint64_t>();
        driver_->start(wanted, static_cast<std::uint16_t>(1u << fdp_.ConsumeIntegralInRange<int>(0, 6)));
        ++starts_;
    }

    bool queue_ready(std::uint16_t q) {
        try {
            driver_->rings(q);
            return true;
        } catch (const std::runtime_error&) {
            return false;
        }
    }

    void post_request() {
        if (!queue_ready(0)) return;
        const std::uint32_t slot = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, kSlots - 1);
        const std::uint64_t in = slots_ + slot * kSlotSize;
        const std::uint64_t out = in + 128;
        const std::vector<std::uint8_t> bytes = make_request(fdp_);
        driver_->ram().write(in, bytes);
        driver_->ram().fill(out, kSlotSize - 128, 0xAA);
        const std::uint32_t writable = fdp_.ConsumeBool()
                                           ? (bytes[0] == VIRTIO_IOMMU_T_PROBE ? 516u : 4u)
                                           : fdp_.ConsumeIntegralInRange<std::uint32_t>(0, kSlotSize - 128);
        std::vector<Segment> segments;
        const std::uint32_t split =
            fdp_.ConsumeIntegralInRange<std::uint32_t>(0, static_cast<std::uint32_t>(bytes.size()));
        if (split > 0) segments.push_back({in, split, false});
        if (bytes.size() > split)
            segments.push_back({in + split, static_cast<std::uint32_t>(bytes.size() - split), false});
        if (writable > 0) segments.push_back({out, writable, true});
        if (segments.empty() || segments.size() > driver_->rings(0).size) return;
        driver_->add_chain(0, segments,
                           fdp_.ConsumeBool() ? support::ChainLayout::Indirect : support::ChainLayout::Direct);
    }

    void kick_requests() {
        if (!queue_ready(0)) return;
        driver_->kick(0);
        // The device writes a 4-byte tail, or probe_size bytes and a tail, never more (2.7.8).
        while (auto used = driver_->pop_used(0)) require(used->len <= kProbeSize + 4);
    }

    // Guest scribbles may hit anything but the used rings, which the checks above read back.
    bool hits_used_ring(std::uint64_t at, std::size_t length) {
        for (std::uint16_t q : {0, 1}) {
            if (!queue_ready(q)) continue;
            const support::QueueRings& rings = driver_->rings(q);
            const std::uint64_t end = rings.used + 6 + 8ULL * rings.size;
            if (at < end && rings.used < at + length) return true;
        }
        return false;
    }

    void op(int which) {
        switch (which) {
            case 0:
            case 1:
            case 2: post_request(); break;
            case 3: kick_requests(); break;
            case 4: {  // a raw descriptor, published as is
                if (!queue_ready(0)) break;
                vring_desc desc{pick_address(fdp_), fdp_.ConsumeIntegral<std::uint32_t>(),
                                fdp_.ConsumeIntegral<std::uint16_t>(), fdp_.ConsumeIntegral<std::uint16_t>()};
                const auto index = fdp_.ConsumeIntegral<std::uint16_t>();
                driver_->write_descriptor(0, index, desc);
                driver_->publish(0, fdp_.ConsumeBool() ? index : fdp_.ConsumeIntegral<std::uint16_t>());
                break;
            }
            case 5: {  // the guest scribbles over guest RAM (rings, buffers, tables)
                const auto bytes = fdp_.ConsumeBytes<std::uint8_t>(fdp_.ConsumeIntegralInRange<std::size_t>(1, 64));
                if (bytes.empty()) break;
                const std::uint64_t at =
                    kRamBase + fdp_.ConsumeIntegralInRange<std::uint64_t>(0, kRamSize - bytes.size());
                if (!hits_used_ring(at, bytes.size())) driver_->ram().write(at, bytes);
                break;
            }
            case 6:
                if (queue_ready(0)) driver_->set_avail_idx(0, fdp_.ConsumeIntegral<std::uint16_t>());
                break;
            case 7:  // an event buffer, posted without a kick
                if (queue_ready(1)) {
                    const std::uint32_t length = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 64);
                    const std::uint64_t buffer = slots_ + (kSlots - 1) * kSlotSize;
                    if (length) driver_->add_chain(1, {Segment{buffer, length, true}});
                    if (fdp_.ConsumeBool()) driver_->kick(1);
                    while (auto used = driver_->pop_used(1)) require(used->len == 0 || used->len == 24);
                }
                break;
            case 8: {  // another device's DMA through its endpoint view
                struct Sink final : vmm::FragmentVisitor {
                    std::uint64_t total = 0;
                    bool visit(vmm::GuestPhysAddr, std::uint64_t length) override {
                        total += length;
                        return true;
                    }
                } sink;
                const std::uint64_t length = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<std::uint64_t>(1, 0x3000)
                                                                : fdp_.ConsumeIntegral<std::uint64_t>();
                const bool ok = model_->translator(fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 5))
                                    ->translate(vmm::Iova{pick_address(fdp_)}, length,
                                                fdp_.ConsumeBool() ? vmm::Access::Write : vmm::Access::Read, sink);
                require(!ok || sink.total == length);  // fragments cover exactly the access
                require(ok || sink.total == 0);        // nothing delivered on failure
                break;
            }
            case 9: {
                std::uint64_t value = 0;
                const unsigned size = 1u << fdp_.ConsumeIntegralInRange<int>(0, 3);
                driver_->read_raw(VIRTIO_MMIO_CONFIG + fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 48),
                                  {reinterpret_cast<std::uint8_t*>(&value), size});
                break;
            }
            case 10: {
                const std::uint64_t value = fdp_.ConsumeIntegral<std::uint64_t>();
                const unsigned size = 1u << fdp_.ConsumeIntegralInRange<int>(0, 3);
                driver_->write_raw(VIRTIO_MMIO_CONFIG + fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 48),
                                   {reinterpret_cast<const std::uint8_t*>(&value), size});
                break;
            }
            case 11:
                backend_->clear_failures();
                if (fdp_.ConsumeBool())
                    backend_->fail_after(fdp_.ConsumeIntegralInRange<std::size_t>(0, 8),
                                         static_cast<iommu::ListenerResult>(fdp_.ConsumeIntegralInRange<int>(1, 3)));
                break;
            case 12:
                if (starts_ < 4) start();
                break;
            default:
                driver_->write_reg(fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 0xfc) & ~3u,
                                   fdp_.ConsumeIntegral<std::uint32_t>());
                break;
        }
    }

    FuzzedDataProvider& fdp_;
    std::shared_ptr<MockIommuBackend> backend_ = std::make_shared<MockIommuBackend>();
    std::shared_ptr<iommu::Iommu> model_;
    iommu::VirtioIommu* device_ = nullptr;
    std::unique_ptr<support::FakeDriver> driver_;
    std::unique_ptr<iommu::FaultForwarder> forwarder_;
    std::uint64_t slots_ = 0;
    int starts_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    vmm::set_log_level(vmm::LogLevel::Error);  // guest errors are expected by the thousand
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);
    try {
        Session session(fdp);
        session.run();
    } catch (const std::runtime_error&) {
        // The fake driver's own misuse (RAM exhaustion, a queue it did not set up): not a finding.
        // The device never throws on guest input; the transport would contain it anyway.
    }
    return 0;
}
