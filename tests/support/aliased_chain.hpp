// Hostile chains that claim far more bytes than they cost the guest, and a way to measure what a
// device really moved for them: descriptors may alias (every entry of a 512 KiB indirect table,
// 32768 of them, may name the same 128 KiB buffer), so one request can claim up to 2^32 bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "tests/support/fake_driver.hpp"
#include "vmm/base/translator.hpp"

namespace support {

inline constexpr std::uint32_t kAliasedBuffer = 128 * 1024;
inline constexpr std::size_t kIndirectEntries = 32768;  // a 512 KiB indirect table

// `count` segments all naming [buffer, buffer + kAliasedBuffer).
inline std::vector<Segment> aliased(std::uint64_t buffer, std::size_t count, bool writable) {
    return std::vector<Segment>(count, Segment{buffer, kAliasedBuffer, writable});
}

// Identity translation that counts the bytes a device reads and writes through it (ring accesses
// included): an independent measure of the DMA work requests cost, not a clock.
struct CountingTranslator final : vmm::Translator {
    mutable std::atomic<std::uint64_t> read_bytes{0};
    mutable std::atomic<std::uint64_t> written_bytes{0};
    bool translate(vmm::Iova iova, std::uint64_t length, vmm::Access access,
                   vmm::FragmentVisitor& visitor) const override {
        (access == vmm::Access::Write ? written_bytes : read_bytes) += length;
        return visitor.visit(vmm::GuestPhysAddr{iova.value}, length);
    }
    std::uint64_t moved() const { return read_bytes + written_bytes; }
};

}  // namespace support
