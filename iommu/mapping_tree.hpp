// iommu::MappingTree: an ordered map from a mapping's first IOVA to the Mapping, as a B+ tree.
// Why not std::map: a domain may hold tens of thousands of mappings (Linux strict mode maps every
// DMA buffer, VFIO allows 65 535), and a red-black tree of that size costs a cache miss per level
// on every MAP/UNMAP; wide nodes keep the path to a leaf short and cache-resident, so the cost per
// request barely grows with the number of mappings. Lookup, insert and erase are O(log n).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "iommu/types.hpp"

namespace iommu {

// Not thread-safe (the owning Domain/Iommu serialises access).
class MappingTree {
    static constexpr int kLeafCapacity = 32;
    static constexpr int kInnerCapacity = 32;  // children per inner node
    static constexpr int kMaxDepth = 24;       // 16^24 entries: never reached

    struct Node {
        bool leaf;
        int count;  // entries (leaf) or children (inner)
    };
    // Keys are kept sorted; values stay where they were written and keys carry a slot index, so
    // an insert or erase shifts 9 bytes per entry instead of a whole Mapping, and touches one
    // value's cache line (a cold leaf costs a few lines, not most of a kilobyte).
    struct Leaf : Node {
        Leaf* prev = nullptr;
        Leaf* next = nullptr;
        std::uint32_t used = 0;                          // occupied value slots
        std::array<std::uint8_t, kLeafCapacity> slot;    // value slot of the i-th key
        std::array<std::uint64_t, kLeafCapacity> keys;   // sorted, searched apart from the values
        std::array<std::uint64_t, kLeafCapacity> lasts;  // last IOVA of the i-th key's entry, so
                                                         // overlap checks need no value
        std::array<Mapping, kLeafCapacity> values;       // in no particular order

        const Mapping& value(int i) const { return values[slot[static_cast<std::size_t>(i)]]; }
        void insert(int i, const Mapping& mapping);  // at sorted position i; count < capacity
        void remove(int i, int n);                   // entries [i, i + n)
        void push_back(const Mapping& mapping) { insert(count, mapping); }
    };
    static_assert(kLeafCapacity <= 32, "Leaf::used is a 32-bit mask");
    struct Inner : Node {
        // children[i] holds keys k with keys[i-1] <= k < keys[i].
        std::array<std::uint64_t, kInnerCapacity - 1> keys;
        std::array<Node*, kInnerCapacity> children;
    };

public:
    // A position: an entry of a leaf, or the end.
    class Cursor {
    public:
        bool at_end() const { return leaf_ == nullptr; }
        const Mapping& operator*() const { return leaf_->value(index_); }
        const Mapping* operator->() const { return &leaf_->value(index_); }
        void next();
        void prev();  // before the first entry: at_end()

    private:
        friend class MappingTree;
        Cursor(const Leaf* leaf, int index) : leaf_(leaf), index_(index) {}
        const Leaf* leaf_;
        int index_;
    };

    MappingTree() = default;
    ~MappingTree();
    MappingTree(const MappingTree&) = delete;
    MappingTree& operator=(const MappingTree&) = delete;

    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    // The first entry whose key is greater than `key` (may be at_end()).
    Cursor upper_bound(std::uint64_t key) const;
    // The entry with the greatest key <= `key` (may be at_end()).
    Cursor floor(std::uint64_t key) const;
    Cursor begin() const;

    // Precondition: no entry has key mapping.first.
    void insert(const Mapping& mapping);
    // Removes the entry with key `key`; false if there is none.
    bool erase(std::uint64_t key);
    void clear();

    // ---- interval operations (entries are disjoint ranges [first, last]), one descent each in
    // the common case
    // Inserts `mapping` unless it shares an address with an entry; false (no change) if it does.
    bool insert_if_free(const Mapping& mapping);
    // Removes every entry inside [first, last] and appends them to `removed` in key order; or, if
    // an entry straddles either end, returns false and changes nothing.
    bool remove_range(std::uint64_t first, std::uint64_t last, std::vector<Mapping>& removed);

private:
    struct PathStep {
        Inner* node;
        int child;  // index of the child taken
    };
    const Leaf* descend(std::uint64_t key) const;
    Leaf* descend(std::uint64_t key, std::array<PathStep, kMaxDepth>& path, int& depth);
    void insert_at(Leaf* leaf, int index, std::array<PathStep, kMaxDepth>& path, int depth, const Mapping& mapping);
    void insert_into_parent(std::array<PathStep, kMaxDepth>& path, int level, Node* left, std::uint64_t key,
                            Node* right);
    void rebalance_leaf(std::array<PathStep, kMaxDepth>& path, int level, Leaf* leaf);
    void rebalance_inner(std::array<PathStep, kMaxDepth>& path, int level, Inner* inner);
    static void remove_child(Inner* parent, int key_index, int child_index);
    static void destroy(Node* node);

    Node* root_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace iommu
