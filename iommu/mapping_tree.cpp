// iommu::MappingTree: B+ tree insert (split upwards) and erase (borrow from a sibling, else merge
// and recurse upwards), with leaves linked in key order. Every node but the root is at least half
// full, so the height is O(log n) and memory per entry is bounded.
#include "iommu/mapping_tree.hpp"

#include <algorithm>
#include <bit>

namespace iommu {
namespace {

// Number of keys <= key in a sorted run (what std::upper_bound finds), as a branchless binary
// search: over random IOVAs a branching search mispredicts at nearly every step.
template <std::size_t N>
int upper_index(const std::array<std::uint64_t, N>& keys, int count, std::uint64_t key) {
    if (count == 0) return 0;
    // A node's keys span several cache lines and a large domain's nodes are often cold: fetch
    // them all at once rather than one dependent miss per search step.
    for (int i = 0; i < count; i += 8) __builtin_prefetch(&keys[static_cast<std::size_t>(i)]);
    const std::uint64_t* base = keys.data();
    int n = count;
    while (n > 1) {  // invariant: the answer lies in [base, base + n]
        const int half = n / 2;
        base = base[half] <= key ? base + half : base;
        n -= half;
    }
    return static_cast<int>(base - keys.data()) + (*base <= key ? 1 : 0);
}

// Starts fetching what a search reads of a node (an inner node whole, a leaf's header, keys and
// last IOVAs) as soon as its address is known: one round trip to memory per level instead of
// one per dependent load (header, then keys, then the child pointer or the neighbour's end).
void prefetch_node(const void* node) {
    const auto* bytes = static_cast<const char*>(node);
    for (int offset = 0; offset < 576; offset += 64) __builtin_prefetch(bytes + offset);
}

}  // namespace

void MappingTree::Cursor::next() {
    if (++index_ >= leaf_->count) {
        leaf_ = leaf_->next;
        index_ = 0;
    }
}

void MappingTree::Cursor::prev() {
    if (index_ > 0) {
        --index_;
        return;
    }
    leaf_ = leaf_->prev;
    index_ = leaf_ ? leaf_->count - 1 : 0;
}

void MappingTree::Leaf::insert(int i, const Mapping& mapping) {
    const int free_slot = std::countr_zero(~used);  // count < capacity, so one is free
    used |= 1u << free_slot;
    for (int k = count; k > i; --k) {
        keys[static_cast<std::size_t>(k)] = keys[static_cast<std::size_t>(k - 1)];
        lasts[static_cast<std::size_t>(k)] = lasts[static_cast<std::size_t>(k - 1)];
        slot[static_cast<std::size_t>(k)] = slot[static_cast<std::size_t>(k - 1)];
    }
    keys[static_cast<std::size_t>(i)] = mapping.first.value;
    lasts[static_cast<std::size_t>(i)] = mapping.last.value;
    slot[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(free_slot);
    values[static_cast<std::size_t>(free_slot)] = mapping;
    ++count;
}

void MappingTree::Leaf::remove(int i, int n) {
    for (int k = i; k < i + n; ++k) used &= ~(1u << slot[static_cast<std::size_t>(k)]);
    for (int k = i; k + n < count; ++k) {
        keys[static_cast<std::size_t>(k)] = keys[static_cast<std::size_t>(k + n)];
        lasts[static_cast<std::size_t>(k)] = lasts[static_cast<std::size_t>(k + n)];
        slot[static_cast<std::size_t>(k)] = slot[static_cast<std::size_t>(k + n)];
    }
    count -= n;
}

MappingTree::~MappingTree() { destroy(root_); }

void MappingTree::clear() {
    destroy(root_);
    root_ = nullptr;
    size_ = 0;
}

void MappingTree::destroy(Node* node) {
    if (!node) return;
    if (!node->leaf) {
        auto* inner = static_cast<Inner*>(node);
        for (int i = 0; i < inner->count; ++i) destroy(inner->children[i]);
        delete inner;
        return;
    }
    delete static_cast<Leaf*>(node);
}

const MappingTree::Leaf* MappingTree::descend(std::uint64_t key) const {
    const Node* node = root_;
    while (!node->leaf) {
        const auto* inner = static_cast<const Inner*>(node);
        node = inner->children[static_cast<std::size_t>(upper_index(inner->keys, inner->count - 1, key))];
        prefetch_node(node);
    }
    return static_cast<const Leaf*>(node);
}

MappingTree::Leaf* MappingTree::descend(std::uint64_t key, std::array<PathStep, kMaxDepth>& path, int& depth) {
    Node* node = root_;
    depth = 0;
    while (!node->leaf) {
        auto* inner = static_cast<Inner*>(node);
        const int child = upper_index(inner->keys, inner->count - 1, key);
        path[static_cast<std::size_t>(depth++)] = {inner, child};
        node = inner->children[static_cast<std::size_t>(child)];
        prefetch_node(node);
    }
    return static_cast<Leaf*>(node);
}

MappingTree::Cursor MappingTree::upper_bound(std::uint64_t key) const {
    if (!root_) return Cursor(nullptr, 0);
    const Leaf* leaf = descend(key);
    const int index = upper_index(leaf->keys, leaf->count, key);
    if (index < leaf->count) return Cursor(leaf, index);
    return Cursor(leaf->next, 0);
}

MappingTree::Cursor MappingTree::floor(std::uint64_t key) const {
    if (!root_) return Cursor(nullptr, 0);
    const Leaf* leaf = descend(key);
    const int index = upper_index(leaf->keys, leaf->count, key);
    if (index > 0) return Cursor(leaf, index - 1);
    // Every key of this leaf is greater: the floor is the last entry of the previous leaf.
    return leaf->prev ? Cursor(leaf->prev, leaf->prev->count - 1) : Cursor(nullptr, 0);
}

MappingTree::Cursor MappingTree::begin() const {
    if (!root_) return Cursor(nullptr, 0);
    const Node* node = root_;
    while (!node->leaf) node = static_cast<const Inner*>(node)->children[0];
    return Cursor(static_cast<const Leaf*>(node), 0);
}

// ---- insert ---------------------------------------------------------------------------------------

void MappingTree::insert(const Mapping& mapping) {
    if (!root_) {
        auto* leaf = new Leaf;
        leaf->leaf = true;
        leaf->count = 0;
        root_ = leaf;
    }
    std::array<PathStep, kMaxDepth> path;
    int depth = 0;
    Leaf* leaf = descend(mapping.first.value, path, depth);
    insert_at(leaf, upper_index(leaf->keys, leaf->count, mapping.first.value), path, depth, mapping);
}

bool MappingTree::insert_if_free(const Mapping& mapping) {
    if (!root_) {
        insert(mapping);
        return true;
    }
    std::array<PathStep, kMaxDepth> path;
    int depth = 0;
    Leaf* leaf = descend(mapping.first.value, path, depth);
    const int index = upper_index(leaf->keys, leaf->count, mapping.first.value);
    // Only the entry before (the last one starting at or before `first`) and the entry after can
    // overlap, since entries are disjoint.
    const std::uint64_t* before_last = index > 0 ? &leaf->lasts[static_cast<std::size_t>(index - 1)]
                                       : leaf->prev
                                           ? &leaf->prev->lasts[static_cast<std::size_t>(leaf->prev->count - 1)]
                                           : nullptr;
    if (before_last && *before_last >= mapping.first.value) return false;
    const std::uint64_t* after = index < leaf->count ? &leaf->keys[static_cast<std::size_t>(index)]
                                 : leaf->next        ? &leaf->next->keys[0]
                                                     : nullptr;
    if (after && *after <= mapping.last.value) return false;
    insert_at(leaf, index, path, depth, mapping);
    return true;
}

void MappingTree::insert_at(Leaf* leaf, int index, std::array<PathStep, kMaxDepth>& path, int depth,
                            const Mapping& mapping) {
    if (leaf->count == kLeafCapacity) {
        auto* right = new Leaf;
        right->leaf = true;
        right->count = 0;
        constexpr int kHalf = kLeafCapacity / 2;
        for (int i = kHalf; i < kLeafCapacity; ++i) right->push_back(leaf->value(i));
        leaf->remove(kHalf, kLeafCapacity - kHalf);
        right->next = leaf->next;
        if (right->next) right->next->prev = right;
        right->prev = leaf;
        leaf->next = right;
        insert_into_parent(path, depth - 1, leaf, right->keys[0], right);
        if (index > kHalf) {  // at kHalf the key is below the separator: it stays left
            leaf = right;
            index -= kHalf;
        }
    }
    leaf->insert(index, mapping);
    ++size_;
}

void MappingTree::insert_into_parent(std::array<PathStep, kMaxDepth>& path, int level, Node* left, std::uint64_t key,
                                     Node* right) {
    if (level < 0) {  // `left` was the root
        auto* root = new Inner;
        root->leaf = false;
        root->count = 2;
        root->children[0] = left;
        root->children[1] = right;
        root->keys[0] = key;
        root_ = root;
        return;
    }
    Inner* parent = path[level].node;
    const int index = path[level].child;  // parent->children[index] == left
    if (parent->count < kInnerCapacity) {
        for (int i = parent->count - 1; i > index; --i) {
            parent->children[i + 1] = parent->children[i];
            parent->keys[i] = parent->keys[i - 1];
        }
        parent->keys[index] = key;
        parent->children[index + 1] = right;
        ++parent->count;
        return;
    }
    // Full: lay out the kInnerCapacity + 1 children and their keys, then split around the middle
    // key, which moves up.
    std::array<std::uint64_t, kInnerCapacity> keys;
    std::array<Node*, kInnerCapacity + 1> children;
    for (int i = 0, k = 0; i < kInnerCapacity; ++i) {
        children[k++] = parent->children[i];
        if (i == index) children[k++] = right;
    }
    for (int i = 0, k = 0; i < kInnerCapacity - 1; ++i) {
        if (i == index) keys[k++] = key;
        keys[k++] = parent->keys[i];
    }
    if (index == kInnerCapacity - 1) keys[kInnerCapacity - 1] = key;
    constexpr int kTotal = kInnerCapacity + 1;
    constexpr int kLeft = kTotal / 2;
    auto* sibling = new Inner;
    sibling->leaf = false;
    sibling->count = kTotal - kLeft;
    for (int i = 0; i < kLeft; ++i) parent->children[i] = children[i];
    for (int i = 0; i < kLeft - 1; ++i) parent->keys[i] = keys[i];
    parent->count = kLeft;
    for (int i = 0; i < sibling->count; ++i) sibling->children[i] = children[kLeft + i];
    for (int i = 0; i < sibling->count - 1; ++i) sibling->keys[i] = keys[kLeft + i];
    insert_into_parent(path, level - 1, parent, keys[kLeft - 1], sibling);
}

// ---- erase ----------------------------------------------------------------------------------------

bool MappingTree::erase(std::uint64_t key) {
    if (!root_) return false;
    std::array<PathStep, kMaxDepth> path;
    int depth = 0;
    Leaf* leaf = descend(key, path, depth);
    const int index = upper_index(leaf->keys, leaf->count, key) - 1;
    if (index < 0 || leaf->keys[index] != key) return false;
    leaf->remove(index, 1);
    --size_;
    if (leaf == root_) {
        if (leaf->count == 0) {
            delete leaf;
            root_ = nullptr;
        }
        return true;
    }
    // A stale separator above (if the first key went) still separates correctly: it is <= every
    // key to its right and > every key to its left.
    if (leaf->count < kLeafCapacity / 2) rebalance_leaf(path, depth - 1, leaf);
    return true;
}

bool MappingTree::remove_range(std::uint64_t first, std::uint64_t last, std::vector<Mapping>& removed) {
    if (!root_) return true;
    std::array<PathStep, kMaxDepth> path;
    int depth = 0;
    Leaf* leaf = descend(first, path, depth);
    int index = upper_index(leaf->keys, leaf->count, first);
    // The entry starting at or before `first`: removable only if it starts exactly there. (If
    // `first` is a key, the descent lands in its leaf, so an exact match is always in this leaf.)
    // The entry starting at or before `first`: removable only if it starts exactly there.
    const Leaf* before_leaf = index > 0 ? leaf : leaf->prev;
    const int before_index = index > 0 ? index - 1 : (leaf->prev ? leaf->prev->count - 1 : -1);
    if (before_leaf && before_index >= 0) {
        const std::uint64_t before_first = before_leaf->keys[static_cast<std::size_t>(before_index)];
        const std::uint64_t before_last = before_leaf->lasts[static_cast<std::size_t>(before_index)];
        if (before_first < first && before_last >= first) return false;
    }
    if (index > 0 && leaf->keys[static_cast<std::size_t>(index - 1)] == first) --index;
    // Check pass over keys and last IOVAs only: every entry that starts inside the range must end
    // inside it. Bounded by the number of entries.
    const std::size_t kept = removed.size();
    for (Cursor at = index < leaf->count ? Cursor(leaf, index) : Cursor(leaf->next, 0); !at.at_end(); at.next()) {
        const auto i = static_cast<std::size_t>(at.index_);
        if (at.leaf_->keys[i] > last) break;
        if (at.leaf_->lasts[i] > last) {
            removed.resize(kept);
            return false;
        }
        removed.push_back(*at);
    }
    const int count = static_cast<int>(removed.size() - kept);
    if (count == 0) return true;
    if (index + count <= leaf->count) {  // all in this leaf: one shift, at most one rebalance
        leaf->remove(index, count);
        size_ -= static_cast<std::size_t>(count);
        if (leaf == root_) {
            if (leaf->count == 0) {
                delete leaf;
                root_ = nullptr;
            }
        } else if (leaf->count < kLeafCapacity / 2) {
            rebalance_leaf(path, depth - 1, leaf);
        }
        return true;
    }
    for (std::size_t i = kept; i < removed.size(); ++i) erase(removed[i].first.value);
    return true;
}

void MappingTree::remove_child(Inner* parent, int key_index, int child_index) {
    for (int i = key_index; i < parent->count - 2; ++i) parent->keys[i] = parent->keys[i + 1];
    for (int i = child_index; i < parent->count - 1; ++i) parent->children[i] = parent->children[i + 1];
    --parent->count;
}

void MappingTree::rebalance_leaf(std::array<PathStep, kMaxDepth>& path, int level, Leaf* leaf) {
    constexpr int kMin = kLeafCapacity / 2;
    Inner* parent = path[level].node;
    const int index = path[level].child;
    Leaf* left = index > 0 ? static_cast<Leaf*>(parent->children[index - 1]) : nullptr;
    Leaf* right = index + 1 < parent->count ? static_cast<Leaf*>(parent->children[index + 1]) : nullptr;
    if (left && left->count > kMin) {  // borrow the left sibling's last entry
        leaf->insert(0, left->value(left->count - 1));
        left->remove(left->count - 1, 1);
        parent->keys[index - 1] = leaf->keys[0];
        return;
    }
    if (right && right->count > kMin) {  // borrow the right sibling's first entry
        leaf->push_back(right->value(0));
        right->remove(0, 1);
        parent->keys[index] = right->keys[0];
        return;
    }
    // Merge with a sibling (both at most half full, so the result fits) and drop the right one.
    Leaf* into = left ? left : leaf;
    Leaf* from = left ? leaf : right;
    for (int i = 0; i < from->count; ++i) into->push_back(from->value(i));
    into->next = from->next;
    if (into->next) into->next->prev = into;
    delete from;
    const int from_index = left ? index : index + 1;
    remove_child(parent, from_index - 1, from_index);
    if (parent == root_) {
        if (parent->count == 1) {
            root_ = parent->children[0];
            delete parent;
        }
        return;
    }
    if (parent->count < kInnerCapacity / 2) rebalance_inner(path, level - 1, parent);
}

void MappingTree::rebalance_inner(std::array<PathStep, kMaxDepth>& path, int level, Inner* inner) {
    constexpr int kMin = kInnerCapacity / 2;
    Inner* parent = path[level].node;
    const int index = path[level].child;
    Inner* left = index > 0 ? static_cast<Inner*>(parent->children[index - 1]) : nullptr;
    Inner* right = index + 1 < parent->count ? static_cast<Inner*>(parent->children[index + 1]) : nullptr;
    if (left && left->count > kMin) {  // rotate the left sibling's last child through the parent
        for (int i = inner->count; i > 0; --i) inner->children[i] = inner->children[i - 1];
        for (int i = inner->count - 1; i > 0; --i) inner->keys[i] = inner->keys[i - 1];
        inner->children[0] = left->children[left->count - 1];
        inner->keys[0] = parent->keys[index - 1];
        parent->keys[index - 1] = left->keys[left->count - 2];
        --left->count;
        ++inner->count;
        return;
    }
    if (right && right->count > kMin) {  // rotate the right sibling's first child through the parent
        inner->keys[inner->count - 1] = parent->keys[index];
        inner->children[inner->count] = right->children[0];
        parent->keys[index] = right->keys[0];
        for (int i = 0; i < right->count - 1; ++i) right->children[i] = right->children[i + 1];
        for (int i = 0; i < right->count - 2; ++i) right->keys[i] = right->keys[i + 1];
        --right->count;
        ++inner->count;
        return;
    }
    Inner* into = left ? left : inner;
    Inner* from = left ? inner : right;
    const int from_index = left ? index : index + 1;
    into->keys[into->count - 1] = parent->keys[from_index - 1];  // the separator comes down
    for (int i = 0; i < from->count; ++i) into->children[into->count + i] = from->children[i];
    for (int i = 0; i < from->count - 1; ++i) into->keys[into->count + i] = from->keys[i];
    into->count += from->count;
    delete from;
    remove_child(parent, from_index - 1, from_index);
    if (parent == root_) {
        if (parent->count == 1) {
            root_ = parent->children[0];
            delete parent;
        }
        return;
    }
    if (parent->count < kMin) rebalance_inner(path, level - 1, parent);
}

}  // namespace iommu
