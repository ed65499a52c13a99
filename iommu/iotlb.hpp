// iommu::Iotlb: the software IOTLB of one table-mode domain (iommu/page_tables.md): leaves found
// by the stage-1 walker, looked up before walking again, dropped by INVALIDATE, by the domain's
// end (its last DETACH) and by device or VM reset (the domain dies with it).
//
// Bounded: at most `capacity` entries; a fill into a full IOTLB starts it over (one O(entries)
// clear per `capacity` fills). Every operation costs at most O(entries), whatever range an
// INVALIDATE names. Thread-safe: translations fill it under the Iommu's shared lock, so it has
// its own small mutex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "iommu/stage1_walker.hpp"

namespace iommu {

struct IotlbStats {
    std::uint64_t entries = 0, capacity = 0;
    std::uint64_t hits = 0, misses = 0;
    std::uint64_t walks = 0, walk_faults = 0;
    std::uint64_t capacity_flushes = 0;  // fills that found it full and started it over
    // INVALIDATE requests by scope (page_tables.md, "INVALIDATE").
    std::uint64_t invalidations_domain = 0, invalidations_asid = 0, invalidations_range = 0;
};

class Iotlb {
public:
    static constexpr std::size_t kDefaultCapacity = 8192;

    // `granule_shift` is the domain's granule (12, 14 or 16): it fixes which leaf sizes exist.
    explicit Iotlb(unsigned granule_shift, std::size_t capacity = kDefaultCapacity);
    Iotlb(const Iotlb&) = delete;
    Iotlb& operator=(const Iotlb&) = delete;

    // The cached leaf containing `iova` (counted as a hit), or nothing (a miss).
    std::optional<Stage1Leaf> lookup(std::uint64_t iova);
    // A walk's outcome: a leaf to cache, or a fault (counted, nothing cached).
    void record_walk(const std::optional<Stage1Leaf>& leaf);

    // INVALIDATE. Global entries match every ASID, as Arm's TLBI by VA and ASID does; `asid_matches`
    // says whether the request's ASID is the domain's (all the domain's entries carry its ASID).
    void invalidate_domain();
    void invalidate_asid(bool asid_matches);
    // Entries overlapping [first, last]; with `by_asid`, non-global ones only if `asid_matches`.
    void invalidate_range(std::uint64_t first, std::uint64_t last, bool by_asid, bool asid_matches);

    IotlbStats stats() const;

private:
    // iova_base is aligned to at least 4 KiB, so its low bits hold the size: one key per leaf.
    static std::uint64_t key(std::uint64_t iova_base, unsigned shift) { return iova_base | shift; }
    template <class Drop>
    void erase_if(Drop&& drop);

    mutable std::mutex lock_;
    std::unordered_map<std::uint64_t, Stage1Leaf> entries_;
    const std::size_t capacity_;
    std::array<std::uint8_t, 3> leaf_shifts_{};  // smallest first: pages are the common case
    std::size_t leaf_shift_count_ = 0;
    IotlbStats stats_;
};

}  // namespace iommu
