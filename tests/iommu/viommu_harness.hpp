// Test harness for the virtio-iommu: an Iommu with registered endpoints, a VirtioIommu behind a
// real MmioTransport, and the fake driver playing the guest. Requests are built as wire bytes in
// fake guest RAM, posted on the real split ring, kicked through QueueNotify, and read back (used
// length, status, every byte of the writable area).
#pragma once

#include <doctest/doctest.h>

#include <linux/virtio_iommu.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

#include "iommu/iommu.hpp"
#include "iommu/uapi/virtio_iommu_tables.h"
#include "iommu/virtio_iommu.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/mock_iommu_backend.hpp"
#include "virtio/features.hpp"

namespace viommu_test {

using iommu::Access;
using iommu::Status;
using support::ChainLayout;
using support::Segment;
using virtio::feature_bit;

constexpr std::uint64_t kAll = ~std::uint64_t{0};
constexpr std::uint64_t kPage = 4096;
constexpr std::uint8_t kSentinel = 0xAA;
constexpr std::uint8_t S(Status s) { return static_cast<std::uint8_t>(s); }
constexpr std::uint64_t feature(unsigned bit) { return feature_bit(bit); }

// ---- wire builders: the device-readable bytes of each request (tail excluded) ------------------

template <class Wire>
std::vector<std::uint8_t> readable_bytes(const Wire& wire, std::size_t length) {
    std::vector<std::uint8_t> bytes(length);
    std::memcpy(bytes.data(), &wire, length);
    return bytes;
}
inline std::vector<std::uint8_t> attach_req(std::uint32_t domain, std::uint32_t endpoint, std::uint32_t flags = 0,
                                            std::uint8_t reserved0 = 0) {
    virtio_iommu_req_attach r{};
    r.head.type = VIRTIO_IOMMU_T_ATTACH;
    r.domain = domain;
    r.endpoint = endpoint;
    r.flags = flags;
    r.reserved[0] = reserved0;
    return readable_bytes(r, 20);
}
inline std::vector<std::uint8_t> detach_req(std::uint32_t domain, std::uint32_t endpoint, std::uint8_t reserved0 = 0) {
    virtio_iommu_req_detach r{};
    r.head.type = VIRTIO_IOMMU_T_DETACH;
    r.domain = domain;
    r.endpoint = endpoint;
    r.reserved[0] = reserved0;
    return readable_bytes(r, 20);
}
inline std::vector<std::uint8_t> map_req(std::uint32_t domain, std::uint64_t virt_start, std::uint64_t virt_end,
                                         std::uint64_t phys_start, std::uint32_t flags) {
    virtio_iommu_req_map r{};
    r.head.type = VIRTIO_IOMMU_T_MAP;
    r.domain = domain;
    r.virt_start = virt_start;
    r.virt_end = virt_end;
    r.phys_start = phys_start;
    r.flags = flags;
    return readable_bytes(r, 36);
}
inline std::vector<std::uint8_t> unmap_req(std::uint32_t domain, std::uint64_t virt_start, std::uint64_t virt_end,
                                           std::uint8_t reserved0 = 0) {
    virtio_iommu_req_unmap r{};
    r.head.type = VIRTIO_IOMMU_T_UNMAP;
    r.domain = domain;
    r.virt_start = virt_start;
    r.virt_end = virt_end;
    r.reserved[0] = reserved0;
    return readable_bytes(r, 28);
}
inline std::vector<std::uint8_t> probe_req(std::uint32_t endpoint, std::uint8_t reserved0 = 0) {
    virtio_iommu_req_probe r{};
    r.head.type = VIRTIO_IOMMU_T_PROBE;
    r.endpoint = endpoint;
    r.reserved[0] = reserved0;
    return readable_bytes(r, 72);
}

// Page-table handover (iommu/page_tables.md).
struct TableFields {
    std::uint16_t format = LKVM_VIOMMU_FMT_ARM_LPAE_S1;
    std::uint16_t asid = 0;
    std::uint64_t tcr = 0, ttbr = 0, mair = 0;
};
inline std::vector<std::uint8_t> attach_table_req(std::uint32_t domain, std::uint32_t endpoint,
                                                  const TableFields& table) {
    lkvm_viommu_req_attach_table r{};
    r.head.type = LKVM_VIOMMU_T_ATTACH_TABLE;
    r.domain = domain;
    r.endpoint = endpoint;
    r.format = table.format;
    r.asid = table.asid;
    r.tcr = table.tcr;
    r.ttbr = table.ttbr;
    r.mair = table.mair;
    return readable_bytes(r, sizeof r - sizeof r.tail);
}
struct InvalidateFields {
    std::uint16_t scope = LKVM_VIOMMU_INV_DOMAIN;
    std::uint16_t caches = LKVM_VIOMMU_INV_CACHE_IOTLB;
    std::uint16_t flags = 0;
    std::uint32_t pasid = 0;
    std::uint64_t asid = 0, virt_start = 0, nr_pages = 0;
    std::uint8_t granule = 0;
};
inline std::vector<std::uint8_t> invalidate_req(std::uint32_t domain, const InvalidateFields& f) {
    lkvm_viommu_req_invalidate r{};
    r.head.type = LKVM_VIOMMU_T_INVALIDATE;
    r.scope = f.scope;
    r.caches = f.caches;
    r.flags = f.flags;
    r.domain = domain;
    r.pasid = f.pasid;
    r.asid = f.asid;
    r.virt_start = f.virt_start;
    r.nr_pages = f.nr_pages;
    r.granule = f.granule;
    return readable_bytes(r, sizeof r - sizeof r.tail);
}
inline InvalidateFields invalidate_range(std::uint64_t start, std::uint64_t pages, std::uint8_t granule = 12) {
    InvalidateFields f;
    f.scope = LKVM_VIOMMU_INV_RANGE;
    f.virt_start = start;
    f.nr_pages = pages;
    f.granule = granule;
    return f;
}

// ---- the harness --------------------------------------------------------------------------------

struct Options {
    iommu::VirtioIommuConfig config{};
    iommu::Limits limits{};
    // Emulated endpoints 1 and 2 by default; tests add listener-backed ones.
    std::vector<iommu::EndpointConfig> endpoints{{1, {}, nullptr}, {2, {}, nullptr}};
    std::uint16_t queue_size = 64;
    std::uint64_t ram_size = 8 << 20;
};

struct Reply {
    bool completed = false;
    std::uint16_t head = 0;
    std::uint32_t used = 0;
    std::vector<std::uint8_t> writable;  // the whole writable area as the driver sees it afterwards
    // The tail where a driver expects it: the last 4 bytes of the writable area.
    std::uint8_t status() const { return writable.size() >= 4 ? writable[writable.size() - 4] : 0xff; }
    bool untouched() const {
        for (std::uint8_t b : writable)
            if (b != kSentinel) return false;
        return true;
    }
};

class Harness {
public:
    explicit Harness(Options options = {})
        : options_(std::move(options)),
          guest_ram_(std::make_shared<support::FakeGuestRam>(support::FakeGuestRam::kDefaultBase, options_.ram_size)),
          iommu(std::make_shared<iommu::Iommu>(options_.limits, &guest_ram_->memory())) {
        for (const iommu::EndpointConfig& endpoint : options_.endpoints) iommu->add_endpoint(endpoint);
        auto owned = std::make_unique<iommu::VirtioIommu>(iommu, options_.config);
        device = owned.get();
        driver = std::make_unique<support::FakeDriver>(std::move(owned), guest_ram_);
        forwarder = std::make_unique<iommu::FaultForwarder>(iommu, driver->transport(), *device);
        for (std::uint16_t i = 0; i < options_.queue_size; ++i) {
            slots_.push_back({ram().alloc(256), ram().alloc(options_.config.probe_size + 512)});
        }
    }
    ~Harness() { forwarder.reset(); }

    support::FakeGuestRam& ram() { return driver->ram(); }
    bool start(std::uint64_t wanted = kAll) { return driver->start(wanted, options_.queue_size); }

    // Posts one request without kicking: readable bytes (split into descriptors at `splits`) and
    // a `writable`-byte area prefilled with the sentinel (split likewise at `wsplits`).
    std::uint16_t post(std::span<const std::uint8_t> readable, std::uint32_t writable,
                       ChainLayout layout = ChainLayout::Direct, std::vector<std::uint32_t> splits = {},
                       std::vector<std::uint32_t> wsplits = {}) {
        const auto [in, out] = slots_[next_slot_++ % slots_.size()];
        if (readable.size() > 256 || writable > options_.config.probe_size + 512)
            throw std::runtime_error("harness: request larger than its slot");
        ram().write(in, readable);
        ram().fill(out, options_.config.probe_size + 512, kSentinel);
        std::vector<Segment> segments;
        auto cut = [&](std::uint64_t base, std::uint32_t total, const std::vector<std::uint32_t>& at, bool w) {
            std::uint32_t from = 0;
            for (std::uint32_t split : at) {
                segments.push_back({base + from, split - from, w});
                from = split;
            }
            if (total > from) segments.push_back({base + from, total - from, w});
        };
        if (!readable.empty()) cut(in, static_cast<std::uint32_t>(readable.size()), splits, false);
        if (writable) cut(out, writable, wsplits, true);
        pending_.push_back({out, writable});
        return driver->add_chain(iommu::VirtioIommu::kRequestQueue, segments, layout);
    }
    void kick() { driver->kick(iommu::VirtioIommu::kRequestQueue); }
    // Used elements for everything posted, in completion order.
    std::vector<Reply> collect() {
        std::vector<Reply> replies;
        while (auto used = driver->pop_used(iommu::VirtioIommu::kRequestQueue)) {
            Reply reply;
            reply.completed = true;
            reply.head = static_cast<std::uint16_t>(used->id);
            reply.used = used->len;
            if (!pending_.empty()) {
                const auto [out, writable] = pending_.front();
                pending_.erase(pending_.begin());
                reply.writable = ram().read_bytes(out, writable);
            }
            replies.push_back(std::move(reply));
        }
        return replies;
    }
    Reply request(std::span<const std::uint8_t> readable, std::uint32_t writable = 4,
                  ChainLayout layout = ChainLayout::Direct, std::vector<std::uint32_t> splits = {},
                  std::vector<std::uint32_t> wsplits = {}) {
        pending_.clear();
        const std::uint16_t head = post(readable, writable, layout, std::move(splits), std::move(wsplits));
        kick();
        std::vector<Reply> replies = collect();
        if (replies.size() != 1) return Reply{};
        last = replies[0];
        CHECK(last.head == head);
        return last;
    }
    // Sends a 4-byte-tail request and returns its status, checking the used length is 4
    // (CONFORMANCE.md L3).
    std::uint8_t simple(const std::vector<std::uint8_t>& readable) {
        Reply reply = request(readable, 4);
        CHECK(reply.completed);
        CHECK(reply.used == 4);
        return reply.status();
    }
    std::uint8_t attach(std::uint32_t endpoint, std::uint32_t domain, std::uint32_t flags = 0) {
        return simple(attach_req(domain, endpoint, flags));
    }
    std::uint8_t detach(std::uint32_t endpoint, std::uint32_t domain) { return simple(detach_req(domain, endpoint)); }
    std::uint8_t map(std::uint32_t domain, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
                     std::uint32_t flags = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE) {
        return simple(map_req(domain, virt_start, virt_end, phys_start, flags));
    }
    std::uint8_t unmap(std::uint32_t domain, std::uint64_t virt_start, std::uint64_t virt_end) {
        return simple(unmap_req(domain, virt_start, virt_end));
    }
    std::uint8_t attach_table(std::uint32_t endpoint, std::uint32_t domain, const TableFields& table) {
        return simple(attach_table_req(domain, endpoint, table));
    }
    std::uint8_t invalidate(std::uint32_t domain, const InvalidateFields& fields = {}) {
        return simple(invalidate_req(domain, fields));
    }
    Reply probe(std::uint32_t endpoint) { return request(probe_req(endpoint), options_.config.probe_size + 4); }

    std::uint64_t config(std::uint32_t offset, unsigned size) { return driver->read_config(offset, size); }

    // ---- event queue: buffers posted without a kick (as Linux does, CONFORMANCE.md L10)
    std::uint64_t post_event_buffer(std::uint32_t length = 24) {
        const std::uint64_t buffer = ram().alloc(64);
        ram().fill(buffer, 64, kSentinel);
        driver->add_chain(iommu::VirtioIommu::kEventQueue, {Segment{buffer, length, true}});
        event_buffers_.push_back(buffer);
        return buffer;
    }
    struct Event {
        std::uint32_t used;
        virtio_iommu_fault fault;
        std::vector<std::uint8_t> raw;  // 32 bytes from the buffer start
    };
    std::optional<Event> next_event() {
        auto used = driver->pop_used(iommu::VirtioIommu::kEventQueue);
        if (!used || event_buffers_.empty()) return std::nullopt;
        const std::uint64_t buffer = event_buffers_.front();
        event_buffers_.erase(event_buffers_.begin());
        Event event{used->len, ram().read_obj<virtio_iommu_fault>(buffer), ram().read_bytes(buffer, 32)};
        return event;
    }

    // ---- DMA of an emulated endpoint, as its device would do it
    struct Fragments final : iommu::FragmentVisitor {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> pieces;
        bool visit(vmm::GuestPhysAddr gpa, std::uint64_t length) override {
            pieces.emplace_back(gpa.value, length);
            return true;
        }
    };
    // The GPA fragments of [iova, iova + length), or nullopt if the access faults.
    std::optional<std::vector<std::pair<std::uint64_t, std::uint64_t>>> translate(std::uint32_t endpoint,
                                                                                  std::uint64_t iova,
                                                                                  std::uint64_t length,
                                                                                  Access access = Access::Read) {
        Fragments fragments;
        if (!iommu->translator(endpoint)->translate(vmm::Iova{iova}, length, access, fragments)) {
            CHECK(fragments.pieces.empty());  // no fragment delivered when the access fails
            return std::nullopt;
        }
        return fragments.pieces;
    }
    // The single GPA iova translates to (length 1), or nullopt.
    std::optional<std::uint64_t> gpa_of(std::uint32_t endpoint, std::uint64_t iova, Access access = Access::Read) {
        auto pieces = translate(endpoint, iova, 1, access);
        if (!pieces) return std::nullopt;
        return pieces->at(0).first;
    }

    iommu::VirtioIommuStats stats() {
        return driver->transport().with_device([&](virtio::Device&) { return device->stats(); });
    }

    Options options_;

private:
    std::shared_ptr<support::FakeGuestRam> guest_ram_;  // before the Iommu, which walks tables in it

public:
    std::shared_ptr<iommu::Iommu> iommu;
    iommu::VirtioIommu* device = nullptr;
    std::unique_ptr<support::FakeDriver> driver;
    std::unique_ptr<iommu::FaultForwarder> forwarder;
    Reply last;

private:
    std::vector<std::pair<std::uint64_t, std::uint64_t>> slots_;
    std::size_t next_slot_ = 0;
    std::vector<std::pair<std::uint64_t, std::uint32_t>> pending_;
    std::vector<std::uint64_t> event_buffers_;
};

// Options with one listener-backed endpoint (id 10) on `backend`, plus the emulated 1 and 2.
inline Options with_backend(const std::shared_ptr<iommu::testing::MockIommuBackend>& backend,
                            std::vector<iommu::EndpointId> ids = {10}) {
    Options options;
    for (iommu::EndpointId id : ids) options.endpoints.push_back({id, {}, backend});
    return options;
}

}  // namespace viommu_test
