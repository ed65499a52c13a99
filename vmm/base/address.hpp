// Guest address kinds as distinct types, and the overflow-checked arithmetic every guest-supplied
// address or length goes through. Converting an Iova into a GuestPhysAddr needs a translator.
#pragma once

#include <bit>
#include <compare>
#include <cstdint>
#include <optional>

static_assert(std::endian::native == std::endian::little,
              "virtio and the arm64 boot protocol are little-endian; lkvm copies structs as-is");

namespace vmm {

// A guest-physical address (what the guest's MMU outputs; what KVM memory slots are keyed by).
struct GuestPhysAddr {
    std::uint64_t value = 0;
    auto operator<=>(const GuestPhysAddr&) const = default;
};

// An I/O virtual address: what a device puts on the bus. Equal to a GuestPhysAddr only when the
// device is not translated by an IOMMU (then DmaMemory converts it one to one).
struct Iova {
    std::uint64_t value = 0;
    auto operator<=>(const Iova&) const = default;
};

// a + b, or nothing if it wraps past 2^64.
constexpr std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) {
    std::uint64_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
    return sum;
}

// a * b, or nothing if it wraps past 2^64.
constexpr std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
    std::uint64_t product = 0;
    if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
    return product;
}

// The last byte of [base, base + size), or nothing for size 0 or a range that wraps.
constexpr std::optional<std::uint64_t> last_byte(std::uint64_t base, std::uint64_t size) {
    if (size == 0) return std::nullopt;
    return checked_add(base, size - 1);
}

constexpr bool is_aligned(std::uint64_t value, std::uint64_t alignment) {
    return alignment != 0 && (value & (alignment - 1)) == 0;
}

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
    return (value + alignment - 1) & ~(alignment - 1);
}

// A non-empty, non-wrapping guest-physical range. Construct through make(), which validates.
class GuestRange {
public:
    static constexpr std::optional<GuestRange> make(GuestPhysAddr base, std::uint64_t size) {
        if (!last_byte(base.value, size)) return std::nullopt;
        return GuestRange(base, size);
    }
    constexpr GuestPhysAddr base() const { return base_; }
    constexpr std::uint64_t size() const { return size_; }
    constexpr std::uint64_t last() const { return base_.value + (size_ - 1); }
    // One past the end; only meaningful when the range does not end at 2^64 - 1.
    constexpr std::uint64_t end() const { return base_.value + size_; }
    constexpr bool contains(GuestPhysAddr addr) const { return addr.value >= base_.value && addr.value <= last(); }
    constexpr bool contains(const GuestRange& other) const {
        return other.base_.value >= base_.value && other.last() <= last();
    }
    constexpr bool overlaps(const GuestRange& other) const {
        return base_.value <= other.last() && other.base_.value <= last();
    }

private:
    constexpr GuestRange(GuestPhysAddr base, std::uint64_t size) : base_(base), size_(size) {}
    GuestPhysAddr base_;
    std::uint64_t size_;
};

}  // namespace vmm
