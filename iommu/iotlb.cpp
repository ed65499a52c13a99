// iommu::Iotlb: a hash of stage-1 leaves keyed by (base, size).
#include "iommu/iotlb.hpp"

namespace iommu {

Iotlb::Iotlb(unsigned granule_shift, std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {
    // Leaf sizes of each granule (stage1_walker.cpp, has_block): a page and its blocks.
    switch (granule_shift) {
        case 14: leaf_shifts_ = {14, 25, 0}, leaf_shift_count_ = 2; break;
        case 16: leaf_shifts_ = {16, 29, 0}, leaf_shift_count_ = 2; break;
        default: leaf_shifts_ = {12, 21, 30}, leaf_shift_count_ = 3; break;
    }
    stats_.capacity = capacity_;
}

std::optional<Stage1Leaf> Iotlb::lookup(std::uint64_t iova) {
    std::lock_guard guard(lock_);
    for (std::size_t i = 0; i < leaf_shift_count_ && !entries_.empty(); ++i) {
        const unsigned shift = leaf_shifts_[i];
        auto it = entries_.find(key(iova & ~((std::uint64_t{1} << shift) - 1), shift));
        if (it == entries_.end()) continue;
        ++stats_.hits;
        return it->second;
    }
    ++stats_.misses;
    return std::nullopt;
}

void Iotlb::record_walk(const std::optional<Stage1Leaf>& leaf) {
    std::lock_guard guard(lock_);
    ++stats_.walks;
    if (!leaf) {
        ++stats_.walk_faults;
        return;
    }
    if (entries_.size() >= capacity_) {
        entries_.clear();
        ++stats_.capacity_flushes;
    }
    entries_.insert_or_assign(key(leaf->iova_base, leaf->size_shift), *leaf);
}

template <class Drop>
void Iotlb::erase_if(Drop&& drop) {
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (drop(it->second)) it = entries_.erase(it);
        else ++it;
    }
}

void Iotlb::invalidate_domain() {
    std::lock_guard guard(lock_);
    ++stats_.invalidations_domain;
    entries_.clear();
}

void Iotlb::invalidate_asid(bool asid_matches) {
    std::lock_guard guard(lock_);
    ++stats_.invalidations_asid;
    if (asid_matches) erase_if([](const Stage1Leaf& leaf) { return !leaf.global; });
}

void Iotlb::invalidate_range(std::uint64_t first, std::uint64_t last, bool by_asid, bool asid_matches) {
    std::lock_guard guard(lock_);
    ++stats_.invalidations_range;
    const bool keep_non_global = by_asid && !asid_matches;
    auto named = [&](const Stage1Leaf& leaf) { return leaf.global || !keep_non_global; };
    // Probing every leaf-sized slot of the range costs its length; scanning costs the entries.
    // Take the cheaper, so a huge range never costs more than the cache holds.
    std::uint64_t slots = 0;
    for (std::size_t i = 0; i < leaf_shift_count_; ++i) {
        const unsigned shift = leaf_shifts_[i];
        const std::uint64_t count = (last >> shift) - (first >> shift) + 1;  // >= 1, no overflow for shift >= 12
        if (__builtin_add_overflow(slots, count, &slots)) slots = ~std::uint64_t{0};
    }
    if (slots > entries_.size()) {
        erase_if([&](const Stage1Leaf& leaf) {
            return leaf.iova_base <= last && first <= leaf.iova_base + (leaf.size() - 1) && named(leaf);
        });
        return;
    }
    for (std::size_t i = 0; i < leaf_shift_count_; ++i) {
        const unsigned shift = leaf_shifts_[i];
        for (std::uint64_t slot = first >> shift; slot <= last >> shift; ++slot) {
            auto it = entries_.find(key(slot << shift, shift));
            if (it != entries_.end() && named(it->second)) entries_.erase(it);
            if (slot == ~std::uint64_t{0} >> shift) break;  // the last slot of the address space
        }
    }
}

IotlbStats Iotlb::stats() const {
    std::lock_guard guard(lock_);
    IotlbStats stats = stats_;
    stats.entries = entries_.size();
    return stats;
}

}  // namespace iommu
