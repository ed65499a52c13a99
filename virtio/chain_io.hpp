// ChainReader / ChainWriter: a device's stream view of a validated descriptor chain, through
// DmaMemory (so translation and permission checks happen in one place). Virtio 1.2 2.7.4:
// devices read only device-readable buffers and write only device-writable ones.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>

#include "virtio/descriptor_chain.hpp"
#include "vmm/base/dma_memory.hpp"

namespace virtio {

// Position inside one direction (readable or writable part) of a chain. Shared by the reader and
// the writer; failure is sticky, so a caller can check once at the end. Every byte read, written
// or visited is charged to the chain first (DescriptorChain::charge): a request that would move
// more than its queue allows fails here, before any of that work is done, whatever device
// asked. Skipping moves nothing and costs nothing.
class ChainCursor {
public:
    ChainCursor(const DescriptorChain& chain, std::span<const Descriptor> descriptors, std::uint64_t total,
                const vmm::DmaMemory& memory)
        : chain_(&chain), descriptors_(descriptors), remaining_(total), memory_(&memory) {}

    std::uint64_t remaining() const { return failed_ ? 0 : remaining_; }
    bool failed() const { return failed_; }

protected:
    enum class Moves : bool { No, Yes };
    // Walks the next `length` bytes as (bus address, piece length) pairs; all or nothing with
    // respect to the length and transfer-limit checks, piece by piece with respect to
    // `per_piece` failures.
    template <class PerPiece>
    bool advance(std::uint64_t length, Moves moves, PerPiece&& per_piece) {
        if (failed_) return false;
        if (length > remaining_) return fail();
        if (moves == Moves::Yes && !chain_->charge(length)) return fail();
        std::uint64_t done = 0;
        // Bounded by the number of descriptors in the chain.
        while (done < length) {
            // Cannot run out (length <= remaining_ == sum of lengths); checked anyway, cheaply.
            if (index_ >= descriptors_.size()) return fail();
            const Descriptor& desc = descriptors_[index_];
            const std::uint64_t avail = desc.len - offset_;
            if (avail == 0) {
                ++index_;
                offset_ = 0;
                continue;
            }
            const std::uint64_t piece = std::min(avail, length - done);
            // Cannot wrap: DescriptorChain checked addr + len.
            if (!per_piece(vmm::Iova{desc.addr.value + offset_}, done, piece)) return fail();
            offset_ += piece;
            done += piece;
            remaining_ -= piece;
        }
        return true;
    }
    const vmm::DmaMemory& memory() const { return *memory_; }

private:
    bool fail() {
        failed_ = true;
        return false;
    }
    const DescriptorChain* chain_;
    std::span<const Descriptor> descriptors_;
    std::size_t index_ = 0;
    std::uint64_t offset_ = 0;
    std::uint64_t remaining_;
    const vmm::DmaMemory* memory_;
    bool failed_ = false;
};

// Reads the device-readable part of a chain in order.
class ChainReader : public ChainCursor {
public:
    ChainReader(const DescriptorChain& chain, const vmm::DmaMemory& memory)
        : ChainCursor(chain, chain.readable(), chain.readable_bytes(), memory) {}

    // Exactly out.size() bytes, or false (short chain or unreachable memory; then failed()).
    bool read(std::span<std::uint8_t> out);
    bool skip(std::uint64_t length);
    // Zero-copy: host pointers for the next `length` bytes (for bulk device I/O, e.g. pwrite).
    bool visit(std::uint64_t length, vmm::HostVisitor& visitor);

    template <class T>
    std::optional<T> read_obj() {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        if (!read({reinterpret_cast<std::uint8_t*>(&value), sizeof(T)})) return std::nullopt;
        return value;
    }
};

// Writes the device-writable part of a chain in order and counts what was written, which is the
// used length to report (2.7.8: never more than was actually written).
class ChainWriter : public ChainCursor {
public:
    ChainWriter(const DescriptorChain& chain, const vmm::DmaMemory& memory)
        : ChainCursor(chain, chain.writable(), chain.writable_bytes(), memory) {}

    bool write(std::span<const std::uint8_t> in);
    // Moves past `length` writable bytes without writing them (not counted as written).
    bool skip(std::uint64_t length);
    // Zero-copy: host pointers for the next `length` bytes (for bulk device I/O, e.g. pread).
    bool visit(std::uint64_t length, vmm::HostVisitor& visitor);

    template <class T>
    bool write_obj(const T& value) {
        static_assert(std::is_trivially_copyable_v<T>);
        return write({reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)});
    }

    // Bytes written so far, saturated to the used-element field width (under-reporting is allowed,
    // over-reporting is not).
    std::uint32_t bytes_written() const {
        return written_ > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(written_);
    }

private:
    std::uint64_t written_ = 0;
};

}  // namespace virtio
