// Split virtqueue, device side: ring setup validation, pop, add_used and notification
// suppression (virtio 1.2 sections 2.7 "Split Virtqueues" and 2.7.7 / 2.7.10 on EVENT_IDX).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "virtio/descriptor_chain.hpp"
#include "vmm/base/address.hpp"
#include "vmm/base/dma_memory.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

// Where the driver put the three ring areas (bus addresses) and how many entries they have.
struct QueueLayout {
    std::uint16_t size = 0;
    vmm::Iova desc;   // descriptor table, 16 * size bytes, 16-byte aligned
    vmm::Iova avail;  // driver area, 6 + 2 * size bytes, 2-byte aligned
    vmm::Iova used;   // device area, 6 + 8 * size bytes, 4-byte aligned
};

enum class QueueSetupError : std::uint8_t {
    None,
    BadSize,          // 0, not a power of two, above the device maximum or above 32768
    Misaligned,       // an area breaks the alignment of 2.7 table "Virtqueue Part Alignment"
    DescUnreachable,  // an area is not (entirely) readable / writable through the DMA view
    AvailUnreachable,
    UsedUnreachable,
};

const char* describe(QueueSetupError error);

// One enabled split virtqueue. Every ring field is read from guest memory by value each time
// (copy, then validate); nothing guest-owned is cached except the device's own indices.
//
// Threads: owned by a transport and used only with that transport's lock held (the device model
// calls it from notify() / host events), so it has no lock of its own.
//
// A queue becomes *broken* when the driver violates the ring protocol in a way the device cannot
// answer in-band (avail idx running ahead by more than the queue size, a head index out of range,
// or ring memory that stops being reachable). A broken queue returns nothing from pop() and
// ignores add_used(); the transport then sets DEVICE_NEEDS_RESET (2.1.1). A malformed *chain*
// does not break the queue: it is returned to the driver with used length 0 and logged.
class Virtqueue {
public:
    static constexpr std::uint16_t kMaxSize = 32768;  // 2.7: "Queue Size ... maximum 32768"

    // Validates `layout` against `max_size` and probes each ring area through `memory` (descriptor
    // table and driver area readable, device area writable). `memory` must outlive the queue.
    // `features` is the negotiated set (INDIRECT_DESC and EVENT_IDX are honoured).
    static std::unique_ptr<Virtqueue> create(const QueueLayout& layout, std::uint16_t max_size,
                                             const vmm::DmaMemory& memory, std::uint64_t features,
                                             QueueSetupError* error = nullptr);

    Virtqueue(const Virtqueue&) = delete;
    Virtqueue& operator=(const Virtqueue&) = delete;

    // The next valid available chain, or nothing when the ring is empty or the queue broke.
    // Malformed chains met on the way are completed with used length 0 (and counted).
    std::optional<DescriptorChain> pop();

    // Publishes a used element {head, len}; the element is written before the used idx, with a
    // release fence between (2.7.8 "MUST ... before updating the used idx"). false if broken.
    bool add_used(std::uint16_t head, std::uint32_t len);

    // Whether the driver wants a used-buffer notification for what was added since the last call:
    // vring_need_event() on used_event with EVENT_IDX, else avail.flags & NO_INTERRUPT (2.7.10).
    bool needs_notification();

    // Driver-notification suppression for a device that polls the ring (2.7.10 / 2.7.7, the
    // "device-side" half): while disabled, the driver is asked not to kick - used.flags gets
    // VRING_USED_F_NO_NOTIFY, or with EVENT_IDX avail_event is kept half the index space away
    // from the next index the device reads, so vring_need_event() is false for every batch the
    // driver adds (queues up to 16384 entries), also one the device consumed before it looked.
    // Suppression is a hint: a driver may still kick and the device must cope. A fresh queue has
    // notifications enabled.
    void disable_notifications();
    // Asks for kicks again, then (after a full fence, pairing with the driver's barrier between
    // its avail idx store and its look at the suppression field) looks at avail idx once more:
    // true when buffers arrived that the driver may not have kicked for - the caller must process
    // them (or keep polling). false on a broken queue.
    bool enable_notifications();
    // Whether the driver made buffers available that pop() has not taken yet (one read of avail
    // idx; an avail idx too far ahead counts as pending, pop() then breaks the queue).
    bool has_pending();

    // Undoing pops (a receive path that popped buffers for a frame they turned out too small for):
    // mark() before popping, rewind(mark) to hand the chains back unused. Refused (false) when a
    // malformed chain was completed in between (its used element is already published) or the
    // queue broke; the caller then completes its chains itself. With EVENT_IDX avail_event is set
    // to the driver's current avail idx, so its next refill kicks.
    struct PopMark {
        std::uint16_t last_avail_idx;
        std::uint64_t malformed_chains;
    };
    PopMark mark() const { return {last_avail_idx_, malformed_chains_}; }
    bool rewind(const PopMark& mark);
    // Fairness between the queues one thread serves (the event loop serves every device): the
    // transport opens a pass with begin_pass(budget) before it calls into the device, and pop()
    // hands out at most `budget` avail entries in it, and none once the chains it handed out
    // moved `bytes` (DescriptorChain::charge; so a pass moves less than `bytes` plus one
    // request's limit). A pass that ran out says so (budget_exhausted()); the transport then
    // arranges another pass later instead of letting a driver that re-posts as fast as it is
    // served keep the thread (the vhost "weight"). Outside a pass (a queue used directly, as in
    // device tests) pop() is unbounded.
    static constexpr std::uint64_t kPassBytes = std::uint64_t{16} << 20;
    void begin_pass(std::uint32_t budget, std::uint64_t bytes = kPassBytes) {
        pass_budget_ = budget;
        pass_byte_budget_ = bytes;
        meter_.pass_bytes = 0;
        budget_exhausted_ = false;
    }
    bool budget_exhausted() const { return budget_exhausted_; }

    // The most one request (one chain) may move, read plus written (Device::max_request_bytes);
    // every chain pop() returns carries it (DescriptorChain::transfer_limit).
    void limit_request_bytes(std::uint64_t bytes) { request_limit_ = bytes; }
    std::uint64_t request_limit() const { return request_limit_; }
    // Bytes moved through this queue's chains, in the current pass and in all.
    const TransferMeter& transferred() const { return meter_; }

    // The driver set FAILED or the device DEVICE_NEEDS_RESET: from now on the queue touches no
    // ring (pop() yields nothing, add_used() and the suppression calls write nothing) until the
    // transport drops it at reset (virtio 1.2 section 2.1.2). Unlike a broken queue this is no
    // error of its own.
    void halt() { halted_ = true; }

    bool is_broken() const { return broken_; }
    std::uint16_t size() const { return layout_.size; }
    const QueueLayout& layout() const { return layout_; }
    const vmm::DmaMemory& memory() const { return *memory_; }
    std::uint16_t last_avail_idx() const { return last_avail_idx_; }
    std::uint64_t malformed_chains() const { return malformed_chains_; }

private:
    Virtqueue(const QueueLayout& layout, const vmm::DmaMemory& memory, std::uint64_t features);
    std::optional<std::uint16_t> read_avail_idx();
    bool publish_avail_event();
    bool write_used_flags(std::uint16_t flags);
    void mark_broken(const char* why);

    QueueLayout layout_;
    const vmm::DmaMemory* memory_;
    bool indirect_ = false;
    bool event_idx_ = false;
    bool broken_ = false;
    bool notify_enabled_ = true;
    bool halted_ = false;
    bool budget_exhausted_ = false;
    std::uint32_t pass_budget_ = UINT32_MAX;
    std::uint64_t pass_byte_budget_ = UINT64_MAX;
    std::uint64_t request_limit_ = std::uint64_t{1} << 33;  // DescriptorChain's default
    TransferMeter meter_;

    std::uint16_t last_avail_idx_ = 0;  // next avail ring slot the device will consume
    std::uint16_t used_idx_ = 0;        // next used ring slot (== the used idx published)
    std::uint16_t signalled_used_ = 0;  // used idx at the last needs_notification() (EVENT_IDX)
    bool signalled_used_valid_ = false;
    bool added_since_check_ = false;
    std::uint64_t malformed_chains_ = 0;
    vmm::RateLimiter log_;
};

}  // namespace virtio
