// DescriptorChain: the single place where split-ring descriptor rules are enforced (virtio 1.2
// sections 2.7.5 "The Virtqueue Descriptor Table" and 2.7.5.3 "Indirect Descriptors").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vmm/base/address.hpp"
#include "vmm/base/dma_memory.hpp"

namespace virtio {

// One checked buffer of a chain. `addr + len` does not wrap; whether it is reachable is decided
// by DmaMemory when the buffer is accessed (the IOMMU mapping may change in between).
struct Descriptor {
    vmm::Iova addr;
    std::uint32_t len = 0;
    bool device_writable = false;
};

enum class ChainError : std::uint8_t {
    None,
    HeadOutOfRange,         // head >= queue size
    NextOutOfRange,         // `next` beyond the table (direct or indirect)
    TooLong,                // more descriptors than the table holds: a loop or an overlong chain
    Unreadable,             // a descriptor (or indirect table entry) could not be read
    IndirectNotNegotiated,  // INDIRECT without VIRTIO_F_INDIRECT_DESC
    IndirectWithNext,       // INDIRECT and NEXT both set (2.7.5.3.1)
    NestedIndirect,         // INDIRECT inside an indirect table (2.7.5.3.1)
    BadIndirectLength,      // indirect table length 0, not a multiple of 16 or > 32768 entries
    AddressWraps,           // addr + len wraps past 2^64
    TooManyBytes,           // total length above 2^32 (2.7.5.2)
    ReadableAfterWritable,  // a device-readable buffer after a device-writable one (2.7.4.2)
};

const char* describe(ChainError error);

// Bytes devices moved through the chains of one queue (virtio/queue.hpp owns it): in the current
// pass, which pop() bounds, and in all.
struct TransferMeter {
    std::uint64_t pass_bytes = 0;
    std::uint64_t total_bytes = 0;
};

// A chain copied out of guest memory and validated as a whole before a device sees any of it, so
// a device never acts on the first half of a malformed chain, and a guest rewriting descriptors
// afterwards cannot change what was validated. Readable descriptors come first, then writable.
class DescriptorChain {
public:
    // Largest indirect table (entries); virtio 1.2 2.7.5.3.1 bounds it by the maximum queue size.
    static constexpr std::uint32_t kMaxIndirectEntries = 32768;

    // Walks the chain starting at `head` in the descriptor table at `table` (`queue_size`
    // entries). Every step is bounded: at most `queue_size` direct descriptors plus at most the
    // entries of one indirect table.
    static DescriptorChain walk(const vmm::DmaMemory& memory, vmm::Iova table, std::uint16_t queue_size,
                                std::uint16_t head, bool indirect_negotiated);

    std::uint16_t head() const { return head_; }
    bool is_valid() const { return error_ == ChainError::None; }
    ChainError error() const { return error_; }

    std::span<const Descriptor> descriptors() const { return {data(), count_}; }
    std::span<const Descriptor> readable() const { return {data(), readable_count_}; }
    std::span<const Descriptor> writable() const { return descriptors().subspan(readable_count_); }
    std::uint64_t readable_bytes() const { return readable_bytes_; }
    std::uint64_t writable_bytes() const { return writable_bytes_; }

    // What a device may move through this request: read plus written bytes, whatever the
    // descriptors claim. Aliasing is legal (one buffer may appear in every entry of an indirect
    // table), so the claimed total (up to 2^32) says nothing about the work a request is worth;
    // the queue sets the device's limit at pop(), and ChainReader / ChainWriter charge every byte
    // they move here (and to the queue's pass) and refuse past the limit.
    std::uint64_t transfer_limit() const { return transfer_limit_; }
    std::uint64_t transferred() const { return transferred_; }
    // Counts `bytes` about to be moved; false (nothing counted) when they would pass the limit.
    // Const: the buffers are fixed, only the count of what moved through them changes.
    bool charge(std::uint64_t bytes) const;

private:
    friend class Virtqueue;  // binds a popped chain to its meter and limit
    explicit DescriptorChain(std::uint16_t head) : head_(head) {}
    void meter(TransferMeter* meter, std::uint64_t limit) {
        meter_ = meter;
        transfer_limit_ = limit;
    }
    bool fail(ChainError error);
    bool append(std::uint64_t addr, std::uint32_t len, bool writable);

    const Descriptor* data() const { return overflow_.empty() ? inline_.data() : overflow_.data(); }

    std::uint16_t head_;
    ChainError error_ = ChainError::None;
    // Small-buffer storage: chains of up to kInlineDescriptors (every virtio-iommu request, a
    // 4 KiB block request) live inline and cost no heap allocation; a longer one moves to
    // overflow_ (bounded by the walk: at most queue size + one indirect table). count_ is the
    // number of descriptors wherever they are.
    static constexpr std::size_t kInlineDescriptors = 16;
    std::array<Descriptor, kInlineDescriptors> inline_;
    std::vector<Descriptor> overflow_;
    std::size_t count_ = 0;
    std::size_t readable_count_ = 0;
    std::uint64_t readable_bytes_ = 0;
    std::uint64_t writable_bytes_ = 0;
    // 2 * 2^32: every byte read once and written twice would still fit; a queue sets its own.
    std::uint64_t transfer_limit_ = std::uint64_t{1} << 33;
    TransferMeter* meter_ = nullptr;  // none for a chain walked outside a queue (tests)
    mutable std::uint64_t transferred_ = 0;
};

}  // namespace virtio
