// Split-ring descriptor walking and validation (virtio 1.2 sections 2.7.5 and 2.7.5.3).
#include "virtio/descriptor_chain.hpp"

#include "virtio/ring.hpp"

namespace virtio {
namespace {

static_assert(sizeof(vring_desc) == 16, "virtio 1.2 2.7.5: a descriptor is 16 bytes");

// 2.7.5.2: "the total of the lengths of all descriptors in a chain MUST NOT exceed 2^32".
constexpr std::uint64_t kMaxChainBytes = std::uint64_t{1} << 32;

}  // namespace

const char* describe(ChainError error) {
    switch (error) {
        case ChainError::None: return "no error";
        case ChainError::HeadOutOfRange: return "head index beyond the queue size";
        case ChainError::NextOutOfRange: return "next index beyond the descriptor table";
        case ChainError::TooLong: return "chain longer than its table (loop or overlong chain)";
        case ChainError::Unreadable: return "descriptor not readable through DMA";
        case ChainError::IndirectNotNegotiated: return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
        case ChainError::IndirectWithNext: return "descriptor has both INDIRECT and NEXT";
        case ChainError::NestedIndirect: return "indirect descriptor inside an indirect table";
        case ChainError::BadIndirectLength: return "indirect table length is 0, not a multiple of 16 or too large";
        case ChainError::AddressWraps: return "buffer address + length wraps";
        case ChainError::TooManyBytes: return "chain longer than 2^32 bytes";
        case ChainError::ReadableAfterWritable: return "device-readable buffer after a device-writable one";
    }
    return "unknown chain error";
}

bool DescriptorChain::charge(std::uint64_t bytes) const {
    if (bytes > transfer_limit_ - transferred_) return false;  // transferred_ <= limit: no wrap
    transferred_ += bytes;
    if (meter_) {
        meter_->pass_bytes += bytes;
        meter_->total_bytes += bytes;
    }
    return true;
}

bool DescriptorChain::fail(ChainError error) {
    error_ = error;
    // An invalid chain exposes no buffers, so no caller can use half of it by mistake.
    overflow_.clear();
    count_ = 0;
    readable_count_ = 0;
    readable_bytes_ = writable_bytes_ = 0;
    return false;
}

bool DescriptorChain::append(std::uint64_t addr, std::uint32_t len, bool writable) {
    if (len != 0 && !vmm::last_byte(addr, len)) return fail(ChainError::AddressWraps);
    const std::uint64_t total = readable_bytes_ + writable_bytes_ + len;  // <= 2^32 + 2^32: no wrap
    if (total > kMaxChainBytes) return fail(ChainError::TooManyBytes);
    // 2.7.4.2: readable buffers precede writable ones.
    if (!writable && count_ != readable_count_) return fail(ChainError::ReadableAfterWritable);
    const Descriptor descriptor{vmm::Iova{addr}, len, writable};
    if (count_ < kInlineDescriptors) {
        inline_[count_] = descriptor;
    } else {
        if (overflow_.empty()) {
            overflow_.reserve(4 * kInlineDescriptors);
            overflow_.assign(inline_.begin(), inline_.end());
        }
        overflow_.push_back(descriptor);
    }
    ++count_;
    if (writable) {
        writable_bytes_ += len;
    } else {
        readable_bytes_ += len;
        ++readable_count_;
    }
    return true;
}

DescriptorChain DescriptorChain::walk(const vmm::DmaMemory& memory, vmm::Iova table, std::uint16_t queue_size,
                                      std::uint16_t head, bool indirect_negotiated) {
    DescriptorChain chain(head);
    if (head >= queue_size) {
        chain.fail(ChainError::HeadOutOfRange);
        return chain;
    }
    vmm::Iova current_table = table;
    std::uint32_t table_entries = queue_size;
    std::uint32_t index = head;
    // Time to live: a chain visits each table entry at most once, so more steps than entries
    // means a loop (2.7.5.2 "MUST NOT create a descriptor chain longer than the Queue Size").
    // Reset once, when entering the (single, non-nested) indirect table.
    std::uint32_t budget = queue_size;
    bool in_indirect = false;
    for (;;) {
        if (budget == 0) {
            chain.fail(ChainError::TooLong);
            return chain;
        }
        --budget;
        // index < table_entries <= 32768, so index * 16 cannot wrap; the table base can.
        auto where = vmm::checked_add(current_table.value, std::uint64_t{index} * sizeof(vring_desc));
        auto desc = where ? memory.read_obj<vring_desc>(vmm::Iova{*where}) : std::nullopt;
        if (!desc) {
            chain.fail(ChainError::Unreadable);
            return chain;
        }
        // Copied out: the guest cannot change these values behind our back from here on.
        const std::uint64_t addr = desc->addr;
        const std::uint32_t len = desc->len;
        const std::uint16_t flags = desc->flags;
        const std::uint16_t next = desc->next;

        if (flags & VRING_DESC_F_INDIRECT) {
            // 2.7.5.3.1: only with the feature, never with NEXT, never nested; the WRITE flag of
            // the pointing descriptor is ignored (2.7.5.3.2).
            ChainError error = ChainError::None;
            if (!indirect_negotiated) error = ChainError::IndirectNotNegotiated;
            else if (in_indirect) error = ChainError::NestedIndirect;
            else if (flags & VRING_DESC_F_NEXT) error = ChainError::IndirectWithNext;
            else if (len == 0 || len % sizeof(vring_desc) != 0 || len / sizeof(vring_desc) > kMaxIndirectEntries)
                error = ChainError::BadIndirectLength;
            else if (!vmm::last_byte(addr, len)) error = ChainError::AddressWraps;
            if (error != ChainError::None) {
                chain.fail(error);
                return chain;
            }
            in_indirect = true;
            current_table = vmm::Iova{addr};
            table_entries = len / sizeof(vring_desc);
            budget = table_entries;
            index = 0;
            continue;
        }
        if (!chain.append(addr, len, (flags & VRING_DESC_F_WRITE) != 0)) return chain;
        if (!(flags & VRING_DESC_F_NEXT)) return chain;
        if (next >= table_entries) {
            chain.fail(ChainError::NextOutOfRange);
            return chain;
        }
        index = next;
    }
}

}  // namespace virtio
