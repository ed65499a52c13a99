// Host-native micro-benchmark of the virtio-iommu request path: MAP and UNMAP of 4 KiB pages through
// the whole device (split virtqueue -> parse -> domain -> external-IOMMU listener -> used ring), on
// one core, with 16 and with 65 535 live mappings in the domain. Only the device's work is timed
// (the kick); building requests and reading the used ring is the guest's. Our aims:
// >= 5 M requests/s, and the per-request cost at 65 535 mappings <= 1.5x the cost at 16.
#include <linux/virtio_config.h>
#include <linux/virtio_iommu.h>
#include <linux/virtio_mmio.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <vector>

#include "iommu/iommu.hpp"
#include "iommu/virtio_iommu.hpp"
#include "virtio/mmio_transport.hpp"
#include "virtio/ring.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/base/interrupt.hpp"

namespace {

constexpr std::uint64_t kRamBase = 0x4000'0000;
constexpr std::uint64_t kRamSize = 64 << 20;
constexpr std::uint16_t kQueueSize = 1024;
constexpr std::uint32_t kBatch = kQueueSize / 2;  // two descriptors per request
constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kDomain = 1;
constexpr std::uint32_t kEndpoint = 10;

// CPU time of this thread: the figure is "cost on one core", not disturbed by other processes
// sharing the machine (as on a CI host) beyond their cache effects.
double cpu_seconds() {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

class NullIrq final : public vmm::InterruptLine {
public:
    void trigger() override {}
};

// The external IOMMU the domain's endpoint sits behind, reduced to counting (a VFIO ioctl would
// cost microseconds and measure the kernel, not us).
class CountingListener final : public iommu::MapListener {
public:
    iommu::ListenerResult detach(iommu::EndpointId, bool) override { return iommu::ListenerResult::Ok; }
    iommu::ListenerResult attach(iommu::EndpointId, iommu::DomainId, bool, const iommu::MappingSource&) override {
        return iommu::ListenerResult::Ok;
    }
    iommu::ListenerResult map(iommu::EndpointId, const iommu::Mapping&) override {
        ++maps;
        return iommu::ListenerResult::Ok;
    }
    iommu::ListenerResult unmap(iommu::EndpointId, const iommu::Mapping&) override {
        ++unmaps;
        return iommu::ListenerResult::Ok;
    }
    std::uint64_t maps = 0, unmaps = 0;
};

// A minimal guest driver: rings and request buffers at fixed places, requests rewritten in place.
class Guest {
public:
    Guest()
        : memory_(std::array{*vmm::GuestRange::make(vmm::GuestPhysAddr{kRamBase}, kRamSize)}),
          iommu_(std::make_shared<iommu::Iommu>(limits())),
          listener_(std::make_shared<CountingListener>()) {
        iommu_->add_endpoint({kEndpoint, {}, listener_});
        iommu::VirtioIommuConfig config;
        config.request_queue_size = kQueueSize;
        transport_ = std::make_unique<virtio::MmioTransport>(std::make_unique<iommu::VirtioIommu>(iommu_, config), irq_,
                                                             memory_);
        start();
        std::uint8_t* host = memory_.host_pointer(vmm::GuestPhysAddr{kRamBase}, kRamSize);
        desc_ = reinterpret_cast<vring_desc*>(host + (kDesc - kRamBase));
        avail_ = reinterpret_cast<std::uint16_t*>(host + (kAvail - kRamBase));
        used_ = reinterpret_cast<std::uint16_t*>(host + (kUsed - kRamBase));
        requests_ = host + (kRequests - kRamBase);
        // Request i: descriptors 2i (readable, 40-byte slot) and 2i + 1 (the 4-byte tail).
        for (std::uint32_t i = 0; i < kBatch; ++i) {
            desc_[2 * i] = {kRequests + 64 * i, 0, VRING_DESC_F_NEXT, static_cast<std::uint16_t>(2 * i + 1)};
            desc_[2 * i + 1] = {kRequests + 64 * i + 48, 4, VRING_DESC_F_WRITE, 0};
        }
        avail_[0] = VRING_AVAIL_F_NO_INTERRUPT;  // Linux polls its request queue
    }

    static iommu::Limits limits() {
        iommu::Limits l;
        l.max_mappings_per_domain = 1 << 20;
        l.max_mappings = 1 << 20;
        return l;
    }

    // Runs one batch of requests (each `build(i, slot)` fills slot i) and returns the seconds the
    // device spent on it.
    template <class Build>
    double run(std::uint32_t count, Build&& build) {
        for (std::uint32_t i = 0; i < count; ++i) {
            const std::uint32_t length = build(i, requests_ + 64 * i);
            desc_[2 * i].len = length;
            avail_[2 + (avail_idx_ + i) % kQueueSize] = static_cast<std::uint16_t>(2 * i);
        }
        std::atomic_thread_fence(std::memory_order_release);
        avail_idx_ = static_cast<std::uint16_t>(avail_idx_ + count);
        avail_[1] = avail_idx_;
        const double start = cpu_seconds();
        // One pass takes at most a ring's worth (MmioTransport::notify); the batch fits in one,
        // but pass again while the transport asks so a larger batch is still measured whole.
        while (transport_->notify(iommu::VirtioIommu::kRequestQueue)) {
        }
        const double stop = cpu_seconds();
        if (used_[1] != avail_idx_) {
            std::fprintf(stderr, "iommu_bench: device completed %u of %u requests\n",
                         static_cast<unsigned>(used_[1] - (avail_idx_ - count)), count);
            std::exit(1);
        }
        for (std::uint32_t i = 0; i < count; ++i) {
            if (requests_[64 * i + 48] != VIRTIO_IOMMU_S_OK) {
                std::fprintf(stderr, "iommu_bench: request %u failed with status %u\n", i, requests_[64 * i + 48]);
                std::exit(1);
            }
        }
        return stop - start;
    }

    static std::uint32_t attach(std::uint8_t* slot) {
        virtio_iommu_req_attach r{};
        r.head.type = VIRTIO_IOMMU_T_ATTACH;
        r.domain = kDomain;
        r.endpoint = kEndpoint;
        std::memcpy(slot, &r, 20);
        return 20;
    }
    static std::uint32_t map(std::uint8_t* slot, std::uint64_t page) {
        virtio_iommu_req_map r{};
        r.head.type = VIRTIO_IOMMU_T_MAP;
        r.domain = kDomain;
        r.virt_start = page * kPage;
        r.virt_end = page * kPage + kPage - 1;
        r.phys_start = kRamBase + (page % 4096) * kPage;
        r.flags = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE;
        std::memcpy(slot, &r, 36);
        return 36;
    }
    static std::uint32_t unmap(std::uint8_t* slot, std::uint64_t page) {
        virtio_iommu_req_unmap r{};
        r.head.type = VIRTIO_IOMMU_T_UNMAP;
        r.domain = kDomain;
        r.virt_start = page * kPage;
        r.virt_end = page * kPage + kPage - 1;
        std::memcpy(slot, &r, 28);
        return 28;
    }

    const CountingListener& listener() const { return *listener_; }
    std::size_t live_mappings() const { return iommu_->stats().live_mappings; }

private:
    static constexpr std::uint64_t kDesc = kRamBase;
    static constexpr std::uint64_t kAvail = kRamBase + 0x10000;
    static constexpr std::uint64_t kUsed = kRamBase + 0x20000;
    static constexpr std::uint64_t kEvent = kRamBase + 0x30000;  // eventq: desc, avail, used
    static constexpr std::uint64_t kRequests = kRamBase + 0x100000;

    void reg(std::uint32_t offset, std::uint32_t value) {
        transport_->mmio_write(offset, {reinterpret_cast<const std::uint8_t*>(&value), 4});
    }
    std::uint32_t read(std::uint32_t offset) {
        std::uint32_t value = 0;
        transport_->mmio_read(offset, {reinterpret_cast<std::uint8_t*>(&value), 4});
        return value;
    }
    void queue(std::uint32_t q, std::uint32_t size, std::uint64_t desc, std::uint64_t avail, std::uint64_t used) {
        reg(VIRTIO_MMIO_QUEUE_SEL, q);
        reg(VIRTIO_MMIO_QUEUE_NUM, size);
        reg(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<std::uint32_t>(desc));
        reg(VIRTIO_MMIO_QUEUE_DESC_HIGH, static_cast<std::uint32_t>(desc >> 32));
        reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<std::uint32_t>(avail));
        reg(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, static_cast<std::uint32_t>(avail >> 32));
        reg(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<std::uint32_t>(used));
        reg(VIRTIO_MMIO_QUEUE_USED_HIGH, static_cast<std::uint32_t>(used >> 32));
        reg(VIRTIO_MMIO_QUEUE_READY, 1);
    }
    void start() {
        reg(VIRTIO_MMIO_STATUS, 0);
        reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        for (std::uint32_t sel : {0u, 1u}) {
            reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
            const std::uint32_t offered = read(VIRTIO_MMIO_DEVICE_FEATURES);
            reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            // As Linux 6.12 negotiates: everything but EVENT_IDX is irrelevant here; keep it simple.
            reg(VIRTIO_MMIO_DRIVER_FEATURES, sel == 0 ? offered & ~(1u << VIRTIO_RING_F_EVENT_IDX) : offered);
        }
        reg(VIRTIO_MMIO_STATUS, read(VIRTIO_MMIO_STATUS) | VIRTIO_CONFIG_S_FEATURES_OK);
        queue(0, kQueueSize, kDesc, kAvail, kUsed);
        queue(1, 64, kEvent, kEvent + 0x1000, kEvent + 0x2000);
        reg(VIRTIO_MMIO_STATUS, read(VIRTIO_MMIO_STATUS) | VIRTIO_CONFIG_S_DRIVER_OK);
        if (read(VIRTIO_MMIO_STATUS) != (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                         VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK)) {
            std::fprintf(stderr, "iommu_bench: device did not start\n");
            std::exit(1);
        }
    }

    vmm::GuestMemory memory_;
    NullIrq irq_;
    std::shared_ptr<iommu::Iommu> iommu_;
    std::shared_ptr<CountingListener> listener_;
    std::unique_ptr<virtio::MmioTransport> transport_;
    vring_desc* desc_ = nullptr;
    std::uint16_t* avail_ = nullptr;
    std::uint16_t* used_ = nullptr;
    std::uint8_t* requests_ = nullptr;
    std::uint16_t avail_idx_ = 0;
};

struct Result {
    double ns_per_request;
    double requests_per_second;
};

// MAP then UNMAP batches of 4 KiB pages with `live` other mappings in the domain. Live mappings
// sit on even pages 0, 2, ..., the measured ones on random odd pages among them (for any `live`),
// so lookups walk a tree of the full size.
Result measure(std::uint32_t live, double seconds) {
    Guest guest;
    guest.run(1, [](std::uint32_t, std::uint8_t* slot) { return Guest::attach(slot); });
    for (std::uint32_t done = 0; done < live;) {
        const std::uint32_t n = std::min(kBatch, live - done);
        guest.run(n, [&](std::uint32_t i, std::uint8_t* slot) { return Guest::map(slot, 2ULL * (done + i)); });
        done += n;
    }
    std::mt19937_64 rng(42);
    std::vector<std::uint64_t> pages(1 << 16);
    for (std::uint64_t i = 0; i < pages.size(); ++i) pages[i] = 2 * i + 1;  // every odd page below 2^17
    std::shuffle(pages.begin(), pages.end(), rng);
    double busy = 0;
    std::uint64_t requests = 0;
    std::size_t cursor = 0;
    const auto wall_start = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count() < seconds) {
        const std::size_t base = cursor;
        cursor = (cursor + kBatch) % (pages.size() - kBatch);
        busy +=
            guest.run(kBatch, [&](std::uint32_t i, std::uint8_t* slot) { return Guest::map(slot, pages[base + i]); });
        busy +=
            guest.run(kBatch, [&](std::uint32_t i, std::uint8_t* slot) { return Guest::unmap(slot, pages[base + i]); });
        requests += 2 * kBatch;
    }
    if (guest.live_mappings() != live) {
        std::fprintf(stderr, "iommu_bench: %zu live mappings, expected %u\n", guest.live_mappings(), live);
        std::exit(1);
    }
    return {busy * 1e9 / static_cast<double>(requests), static_cast<double>(requests) / busy};
}

}  // namespace

int main(int argc, char** argv) {
    const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
    constexpr int kRounds = 5;
    measure(16, 0.2);  // warm up caches and the allocator
    // Alternate the two sizes and keep the median of each, so a noisy neighbour on a shared host
    // skews both alike instead of one.
    std::vector<Result> small, large;
    for (int round = 0; round < kRounds; ++round) {
        small.push_back(measure(16, seconds / kRounds));
        large.push_back(measure(65535, seconds / kRounds));
    }
    auto median = [](std::vector<Result> results) {
        std::sort(results.begin(), results.end(),
                  [](const Result& a, const Result& b) { return a.ns_per_request < b.ns_per_request; });
        return results[results.size() / 2];
    };
    const Result s16 = median(small), s64k = median(large);
    const double ratio = s64k.ns_per_request / s16.ns_per_request;
    std::printf(
        "virtio-iommu MAP+UNMAP of 4 KiB pages, whole path (virtqueue -> parse -> domain -> listener -> used),\n"
        "one core, CPU time of the device thread, median of %d rounds:\n",
        kRounds);
    std::printf("  %6u live mappings: %7.1f ns/request  %6.2f M requests/s\n", 16u, s16.ns_per_request,
                s16.requests_per_second / 1e6);
    std::printf("  %6u live mappings: %7.1f ns/request  %6.2f M requests/s\n", 65535u, s64k.ns_per_request,
                s64k.requests_per_second / 1e6);
    std::printf("  cost ratio 65535/16: %.2f (aim <= 1.50); throughput aim >= 5 M requests/s per core\n", ratio);
    return 0;
}
