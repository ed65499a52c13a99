// Split virtqueue, device side (virtio 1.2 sections 2.7.6-2.7.10).
#include "virtio/queue.hpp"

#include <linux/virtio_config.h>

#include <atomic>
#include <bit>

#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

// Offsets inside the driver area (struct vring_avail) and device area (struct vring_used).
constexpr std::uint64_t kRingFlags = 0;
constexpr std::uint64_t kRingIdx = 2;
constexpr std::uint64_t kRingEntries = 4;
static_assert(sizeof(vring_used_elem) == 8);

constexpr std::uint64_t desc_area_size(std::uint16_t size) { return std::uint64_t{16} * size; }
// Both areas include the trailing event word (used_event / avail_event), as the spec's layout does.
constexpr std::uint64_t avail_area_size(std::uint16_t size) { return 6 + std::uint64_t{2} * size; }
constexpr std::uint64_t used_area_size(std::uint16_t size) { return 6 + std::uint64_t{8} * size; }

// Accepts every host piece: used to ask DmaMemory "is all of this reachable with this access".
class Probe final : public vmm::HostVisitor {
public:
    bool visit(std::uint8_t*, std::uint64_t) override { return true; }
};

bool reachable(const vmm::DmaMemory& memory, vmm::Iova addr, std::uint64_t length, vmm::Access access) {
    Probe probe;
    return memory.access(addr, length, access, probe);
}

}  // namespace

const char* describe(QueueSetupError error) {
    switch (error) {
        case QueueSetupError::None: return "no error";
        case QueueSetupError::BadSize: return "queue size is 0, not a power of two or above the maximum";
        case QueueSetupError::Misaligned: return "ring area misaligned";
        case QueueSetupError::DescUnreachable: return "descriptor table not readable";
        case QueueSetupError::AvailUnreachable: return "driver area (avail ring) not readable";
        case QueueSetupError::UsedUnreachable: return "device area (used ring) not writable";
    }
    return "unknown queue setup error";
}

std::unique_ptr<Virtqueue> Virtqueue::create(const QueueLayout& layout, std::uint16_t max_size,
                                             const vmm::DmaMemory& memory, std::uint64_t features,
                                             QueueSetupError* error) {
    auto failed = [&](QueueSetupError e) {
        if (error) *error = e;
        return std::unique_ptr<Virtqueue>();
    };
    const std::uint16_t size = layout.size;
    if (size == 0 || !std::has_single_bit(size) || size > max_size || size > kMaxSize)
        return failed(QueueSetupError::BadSize);
    // 2.7 "Virtqueue Part Alignment": 16 / 2 / 4.
    if (!vmm::is_aligned(layout.desc.value, VRING_DESC_ALIGN_SIZE) ||
        !vmm::is_aligned(layout.avail.value, VRING_AVAIL_ALIGN_SIZE) ||
        !vmm::is_aligned(layout.used.value, VRING_USED_ALIGN_SIZE))
        return failed(QueueSetupError::Misaligned);
    // Probing also rejects areas whose end wraps past 2^64 (DmaMemory refuses such ranges).
    if (!reachable(memory, layout.desc, desc_area_size(size), vmm::Access::Read))
        return failed(QueueSetupError::DescUnreachable);
    if (!reachable(memory, layout.avail, avail_area_size(size), vmm::Access::Read))
        return failed(QueueSetupError::AvailUnreachable);
    if (!reachable(memory, layout.used, used_area_size(size), vmm::Access::Write))
        return failed(QueueSetupError::UsedUnreachable);
    if (error) *error = QueueSetupError::None;
    return std::unique_ptr<Virtqueue>(new Virtqueue(layout, memory, features));
}

Virtqueue::Virtqueue(const QueueLayout& layout, const vmm::DmaMemory& memory, std::uint64_t features)
    : layout_(layout),
      memory_(&memory),
      indirect_(has_feature(features, VIRTIO_RING_F_INDIRECT_DESC)),
      event_idx_(has_feature(features, VIRTIO_RING_F_EVENT_IDX)) {}

void Virtqueue::mark_broken(const char* why) {
    if (!broken_) vmm::guest_error(log_, "virtqueue broken: %s", why);
    broken_ = true;
}

std::optional<std::uint16_t> Virtqueue::read_avail_idx() {
    auto idx = memory_->read_obj<std::uint16_t>(vmm::Iova{layout_.avail.value + kRingIdx});
    if (!idx) mark_broken("avail ring unreadable");
    return idx;
}

bool Virtqueue::publish_avail_event() {
    // avail_event sits after the used ring entries (2.7.8, struct virtq_used). Suppressed: half
    // the index space away from the next index we read. The driver kicks iff avail_event lies in
    // [old, new) of the batch it just added (vring_need_event); whenever it looks, our index L is
    // within [old - size, new] (at most `size` pending, and we never pass its idx), so
    // (L + 0x8000 - old) mod 2^16 lies in [0x8000 - size, 0x8000 + size], never below new - old <=
    // size for queues up to 16384 entries: no kick, even when we consumed the batch before the
    // driver looked (one behind L would then be inside it). Bigger queues may get a spurious kick.
    const vmm::Iova where{layout_.used.value + kRingEntries + std::uint64_t{8} * layout_.size};
    const std::uint16_t event =
        notify_enabled_ ? last_avail_idx_ : static_cast<std::uint16_t>(last_avail_idx_ + 0x8000);
    if (memory_->write_obj<std::uint16_t>(where, event)) return true;
    mark_broken("used ring unwritable");
    return false;
}

std::optional<DescriptorChain> Virtqueue::pop() {
    // Bounded: each iteration consumes one avail entry, and at most `size` can be pending.
    for (std::uint32_t attempt = 0; attempt <= layout_.size; ++attempt) {
        if (broken_ || halted_) return std::nullopt;
        if (pass_budget_ == 0 || meter_.pass_bytes >= pass_byte_budget_) {
            budget_exhausted_ = true;
            return std::nullopt;
        }
        auto avail_idx = read_avail_idx();
        if (!avail_idx) return std::nullopt;
        if (*avail_idx == last_avail_idx_) {
            // Polling (notifications off): the poller looks again itself, no kick to arm.
            if (!event_idx_ || !notify_enabled_) return std::nullopt;
            // Ask for a kick at the next entry, then look again: a driver that added a buffer
            // before seeing the new avail_event will not kick (2.7.10, the vhost pattern).
            if (!publish_avail_event()) return std::nullopt;
            std::atomic_thread_fence(std::memory_order_seq_cst);
            avail_idx = read_avail_idx();
            if (!avail_idx || *avail_idx == last_avail_idx_) return std::nullopt;
        }
        const std::uint16_t pending = static_cast<std::uint16_t>(*avail_idx - last_avail_idx_);
        if (pending > layout_.size) {
            mark_broken("avail idx runs more than the queue size ahead");
            return std::nullopt;
        }
        // Read the ring entry only after the idx that made it visible (2.7.13.3 driver side
        // pairs a write barrier with this).
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::uint64_t slot = last_avail_idx_ % layout_.size;
        auto head = memory_->read_obj<std::uint16_t>(vmm::Iova{layout_.avail.value + kRingEntries + 2 * slot});
        if (!head) {
            mark_broken("avail ring unreadable");
            return std::nullopt;
        }
        if (*head >= layout_.size) {
            mark_broken("avail ring head index out of range");
            return std::nullopt;
        }
        ++last_avail_idx_;
        if (pass_budget_ != UINT32_MAX) --pass_budget_;
        if (event_idx_ && !publish_avail_event()) return std::nullopt;

        DescriptorChain chain = DescriptorChain::walk(*memory_, layout_.desc, layout_.size, *head, indirect_);
        if (chain.is_valid()) {
            chain.meter(&meter_, request_limit_);
            return chain;
        }
        // 2.7.5.2 asks the device to treat such a chain as an error; answering it with an empty
        // used element keeps the driver's ring accounting intact and the queue usable.
        ++malformed_chains_;
        vmm::guest_error(log_, "virtqueue: dropping chain at head %u: %s", *head, describe(chain.error()));
        if (!add_used(*head, 0)) return std::nullopt;
    }
    return std::nullopt;
}

bool Virtqueue::add_used(std::uint16_t head, std::uint32_t len) {
    if (broken_ || halted_) return false;
    if (head >= layout_.size) return false;  // not a head pop() can have returned: a device bug
    const std::uint64_t slot = used_idx_ % layout_.size;
    vring_used_elem elem{};
    elem.id = head;
    elem.len = len;
    if (!memory_->write_obj(vmm::Iova{layout_.used.value + kRingEntries + 8 * slot}, elem)) {
        mark_broken("used ring unwritable");
        return false;
    }
    // 2.7.8: the element (and the buffer data before it) must be visible before the new idx.
    std::atomic_thread_fence(std::memory_order_release);
    const std::uint16_t next = static_cast<std::uint16_t>(used_idx_ + 1);
    if (!memory_->write_obj<std::uint16_t>(vmm::Iova{layout_.used.value + kRingIdx}, next)) {
        mark_broken("used ring unwritable");
        return false;
    }
    used_idx_ = next;
    added_since_check_ = true;
    return true;
}

bool Virtqueue::write_used_flags(std::uint16_t flags) {
    if (memory_->write_obj<std::uint16_t>(vmm::Iova{layout_.used.value + kRingFlags}, flags)) return true;
    mark_broken("used ring unwritable");
    return false;
}

void Virtqueue::disable_notifications() {
    if (broken_ || halted_ || !notify_enabled_) return;
    notify_enabled_ = false;
    // With EVENT_IDX the driver ignores used.flags (2.7.10), and vice versa for avail_event.
    if (event_idx_) publish_avail_event();
    else write_used_flags(VRING_USED_F_NO_NOTIFY);
}

bool Virtqueue::enable_notifications() {
    if (broken_ || halted_) return false;
    if (!notify_enabled_) {
        notify_enabled_ = true;
        if (event_idx_ ? !publish_avail_event() : !write_used_flags(0)) return false;
    }
    // 2.7.10: our suppression-field store must be visible before we read avail idx, as the
    // driver's avail idx store is before its read of the field (virtio_mb in kick_prepare).
    // Otherwise a buffer added in between would get neither a kick nor our attention.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return has_pending();
}

bool Virtqueue::rewind(const PopMark& mark) {
    if (broken_ || halted_ || mark.malformed_chains != malformed_chains_) return false;
    last_avail_idx_ = mark.last_avail_idx;
    if (!event_idx_ || !notify_enabled_) return true;
    auto avail_idx = read_avail_idx();
    if (!avail_idx) return false;
    const vmm::Iova where{layout_.used.value + kRingEntries + std::uint64_t{8} * layout_.size};
    if (memory_->write_obj<std::uint16_t>(where, *avail_idx)) return true;
    mark_broken("used ring unwritable");
    return false;
}

bool Virtqueue::has_pending() {
    if (broken_ || halted_) return false;
    auto avail_idx = read_avail_idx();
    return avail_idx && *avail_idx != last_avail_idx_;
}

bool Virtqueue::needs_notification() {
    if (broken_ || halted_ || !added_since_check_) return false;
    added_since_check_ = false;
    // The used idx store must be visible before we read the driver's suppression field, and the
    // driver orders the other way round: a full fence on both sides (2.7.10 / vhost_notify).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) {
        auto flags = memory_->read_obj<std::uint16_t>(vmm::Iova{layout_.avail.value + kRingFlags});
        if (!flags) {
            mark_broken("avail ring unreadable");
            return false;
        }
        return (*flags & VRING_AVAIL_F_NO_INTERRUPT) == 0;
    }
    const std::uint16_t old_idx = signalled_used_;
    const bool old_valid = signalled_used_valid_;
    signalled_used_ = used_idx_;
    signalled_used_valid_ = true;
    // used_event follows the avail ring entries.
    auto used_event = memory_->read_obj<std::uint16_t>(
        vmm::Iova{layout_.avail.value + kRingEntries + std::uint64_t{2} * layout_.size});
    if (!used_event) {
        mark_broken("avail ring unreadable");
        return false;
    }
    if (!old_valid) return true;
    return vring_need_event(*used_event, used_idx_, old_idx) != 0;
}

}  // namespace virtio
