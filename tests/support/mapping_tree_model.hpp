// Differential harness for iommu::MappingTree: every operation is applied to the tree and to a
// std::map of disjoint ranges (the reference), and the answers are compared. Shared by the short
// randomized run in the unit tests (tests/iommu/mapping_tree_test.cpp) and the libFuzzer target
// for long runs (tests/fuzz/fuzz_mapping_tree.cpp). Keys are clustered in a small page range, so
// a few hundred entries come and go and leaves and inner nodes split and merge all the time.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "iommu/mapping_tree.hpp"
#include "vmm/base/log.hpp"

namespace support {

class MappingTreeModel {
public:
    static constexpr std::uint64_t kPage = 4096;
    static constexpr std::uint64_t kPages = 8192;  // the clustered key space, in pages

    enum class Op : std::uint8_t { InsertIfFree, Erase, RemoveRange, Floor, UpperBound, Count };

    // Applies one operation; `a` picks the first page, `b` a length in pages. Returns "" when tree
    // and reference agree, else what differed.
    std::string step(Op op, std::uint64_t a, std::uint64_t b) {
        const std::uint64_t first = (a % kPages) * kPage;
        // Mostly one or two pages (many entries), now and then up to 64.
        const std::uint64_t pages = b % 8 == 0 ? b % 64 + 1 : b % 2 + 1;
        const std::uint64_t last = first + pages * kPage - 1;
        switch (op) {
            case Op::InsertIfFree: {
                const iommu::Mapping m{vmm::Iova{first}, vmm::Iova{last}, vmm::GuestPhysAddr{first ^ 0xabc000}, 1};
                const bool free = is_free(first, last);
                if (tree_.insert_if_free(m) != free) return "insert_if_free disagrees at " + vmm::hex(first);
                if (free) reference_.emplace(first, m);
                break;
            }
            case Op::Erase: {
                // Mostly keys that exist (the entry floor(first) of the reference), sometimes not.
                std::uint64_t key = first;
                auto it = reference_.upper_bound(first);
                if (b % 4 != 0 && it != reference_.begin()) key = std::prev(it)->first;
                const bool present = reference_.erase(key) == 1;
                if (tree_.erase(key) != present) return "erase disagrees at " + vmm::hex(key);
                break;
            }
            case Op::RemoveRange: {
                // Wide ranges now and then, so whole subtrees empty and the tree shrinks.
                const std::uint64_t range_last = b % 16 == 0 ? last + (b % 512) * kPage : last;
                std::vector<iommu::Mapping> expected;
                const bool ok = remove_range(first, range_last, expected);
                std::vector<iommu::Mapping> removed;
                if (tree_.remove_range(first, range_last, removed) != ok)
                    return "remove_range result disagrees at " + vmm::hex(first);
                if (removed != expected) return "remove_range removed other entries at " + vmm::hex(first);
                break;
            }
            case Op::Floor: {
                const std::uint64_t key = first + b % kPage;
                auto it = reference_.upper_bound(key);
                const iommu::MappingTree::Cursor c = tree_.floor(key);
                if (c.at_end() != (it == reference_.begin())) return "floor at_end disagrees at " + vmm::hex(key);
                if (!c.at_end() && !(*c == std::prev(it)->second)) return "floor disagrees at " + vmm::hex(key);
                return walk_from(c, it == reference_.begin() ? reference_.end() : std::prev(it), b);
            }
            case Op::UpperBound: {
                const std::uint64_t key = first + b % kPage;
                auto it = reference_.upper_bound(key);
                const iommu::MappingTree::Cursor c = tree_.upper_bound(key);
                if (c.at_end() != (it == reference_.end())) return "upper_bound at_end disagrees at " + vmm::hex(key);
                if (!c.at_end() && !(*c == it->second)) return "upper_bound disagrees at " + vmm::hex(key);
                return walk_from(c, it, b);
            }
            case Op::Count: break;
        }
        if (tree_.size() != reference_.size()) return "size disagrees";
        return "";
    }

    // Full in-order comparison (iteration across every leaf).
    std::string check_all() const {
        auto it = reference_.begin();
        for (iommu::MappingTree::Cursor c = tree_.begin(); !c.at_end(); c.next(), ++it) {
            if (it == reference_.end()) return "tree has more entries";
            if (!(*c == it->second)) return "iteration disagrees at " + vmm::hex(it->first);
        }
        if (it != reference_.end()) return "tree has fewer entries";
        return "";
    }

    std::size_t size() const { return reference_.size(); }

private:
    bool is_free(std::uint64_t first, std::uint64_t last) const {
        auto it = reference_.upper_bound(last);  // entries starting after `last` cannot overlap
        return it == reference_.begin() || std::prev(it)->second.last.value < first;
    }

    bool remove_range(std::uint64_t first, std::uint64_t last, std::vector<iommu::Mapping>& removed) {
        auto begin = reference_.lower_bound(first);
        if (begin != reference_.begin() && std::prev(begin)->second.last.value >= first) return false;
        auto end = reference_.upper_bound(last);
        if (end != begin && std::prev(end)->second.last.value > last) return false;
        for (auto it = begin; it != end; ++it) removed.push_back(it->second);
        reference_.erase(begin, end);
        return true;
    }

    // A few steps forward and back from a cursor, across leaf boundaries.
    std::string walk_from(iommu::MappingTree::Cursor c, std::map<std::uint64_t, iommu::Mapping>::const_iterator it,
                          std::uint64_t b) const {
        const bool forward = b % 2 == 0;
        for (unsigned i = 0; i < 40 && !c.at_end(); ++i) {
            if (it == reference_.end() || !(*c == it->second)) return "cursor walk disagrees";
            if (forward) {
                c.next();
                ++it;
            } else {
                c.prev();
                if (it == reference_.begin()) return c.at_end() ? "" : "cursor walk: prev past the first entry";
                --it;
                if (c.at_end()) return "cursor walk ended early (backward)";
            }
        }
        if (c.at_end() && forward && it != reference_.end()) return "cursor walk ended early";
        return "";
    }

    iommu::MappingTree tree_;
    std::map<std::uint64_t, iommu::Mapping> reference_;
};

}  // namespace support
