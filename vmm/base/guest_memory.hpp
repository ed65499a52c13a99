// Guest RAM: a fixed set of regions, immutable after construction (so readers need no lock).
// Every access by guest-physical address is bounds-checked against a single region; accesses copy
// (never alias), so a value read from guest memory cannot change after it has been validated.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "vmm/base/address.hpp"
#include "vmm/base/mmap_region.hpp"

namespace vmm {

class GuestMemory {
public:
    struct Region {
        GuestRange range;
        std::uint8_t* host;  // host address of range.base()
    };

    // Allocates anonymous host memory for each range. Ranges must be page-aligned, non-empty and
    // must not overlap. Throws SetupError otherwise, or when the host has no memory.
    explicit GuestMemory(std::span<const GuestRange> ranges);
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;

    const std::vector<Region>& regions() const { return regions_; }
    std::uint64_t total_size() const;

    // Host pointer to [addr, addr + length) if the whole range lies inside one region, else null.
    // length 0 is rejected. For KVM slots, VFIO DMA maps and bulk device I/O only.
    std::uint8_t* host_pointer(GuestPhysAddr addr, std::uint64_t length) const;

    bool read(GuestPhysAddr addr, std::span<std::uint8_t> out) const;
    bool write(GuestPhysAddr addr, std::span<const std::uint8_t> in) const;

    template <class T>
    std::optional<T> read_obj(GuestPhysAddr addr) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        if (!read(addr, {reinterpret_cast<std::uint8_t*>(&value), sizeof(T)})) return std::nullopt;
        return value;
    }
    template <class T>
    bool write_obj(GuestPhysAddr addr, const T& value) const {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(addr, {reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)});
    }

private:
    std::vector<MmapRegion> backing_;
    std::vector<Region> regions_;
};

}  // namespace vmm
