// iommu::MappingTree: B+ tree insert (split upwards) and erase (borrow from a sibling, else merge
// and recurse upwards), with leaves linked in key order. Every node but the root is at least half
// full, so the height is O(log n) and memory per entry is bounded.
#include "iommu/mapping_tree.hpp"

#include <algorithm>

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
        node = inner->children[upper_index(inner->keys, inner->count - 1, key)];
    }
    return static_cast<const Leaf*>(node);
}

MappingTree::Leaf* MappingTree::descend(std::uint64_t key, std::array<PathStep, kMaxDepth>& path, int& depth) {
    Node* node = root_;
    depth = 0;
    while (!node->leaf) {
        auto* inner = static_cast<Inner*>(node);
        const int child = upper_index(inner->keys, inner->count - 1, key);
        path[depth++] = {inner, child};
        node = inner->children[child];
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
    const Mapping* before = index > 0 ? &leaf->values[index - 1]
                            : leaf->prev ? &leaf->prev->values[leaf->prev->count - 1]
                                         : nullptr;
    if (before && before->last >= mapping.first) return false;
    const std::uint64_t* after = index < leaf->count ? &leaf->keys[index] : leaf->next ? &leaf->next->keys[0] : nullptr;
    if (after && *after <= mapping.last.value) return false;
    insert_at(leaf, index, path, depth, mapping);
    return true;
}

void MappingTree::insert_at(Leaf* leaf, int index, std::array<PathStep, kMaxDepth>& path, int depth,
                            const Mapping& mapping) {
    const std::uint64_t key = mapping.first.value;
    if (leaf->count == kLeafCapacity) {
        auto* right = new Leaf;
        right->leaf = true;
        constexpr int kHalf = kLeafCapacity / 2;
        right->count = kLeafCapacity - kHalf;
        std::copy(leaf->keys.begin() + kHalf, leaf->keys.end(), right->keys.begin());
        std::copy(leaf->values.begin() + kHalf, leaf->values.end(), right->values.begin());
        leaf->count = kHalf;
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
    std::copy_backward(leaf->keys.begin() + index, leaf->keys.begin() + leaf->count,
                       leaf->keys.begin() + leaf->count + 1);
    std::copy_backward(leaf->values.begin() + index, leaf->values.begin() + leaf->count,
                       leaf->values.begin() + leaf->count + 1);
    leaf->keys[index] = key;
    leaf->values[index] = mapping;
    ++leaf->count;
    ++size_;
}

void MappingTree::insert_into_parent(std::array<PathStep, kMaxDepth>& path, int level, Node* left,
                                     std::uint64_t key, Node* right) {
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
    std::copy(leaf->keys.begin() + index + 1, leaf->keys.begin() + leaf->count, leaf->keys.begin() + index);
    std::copy(leaf->values.begin() + index + 1, leaf->values.begin() + leaf->count, leaf->values.begin() + index);
    --leaf->count;
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
    const Mapping* before = index > 0 ? &leaf->values[index - 1]
                            : leaf->prev ? &leaf->prev->values[leaf->prev->count - 1]
                                         : nullptr;
    if (before && before->first.value < first && before->last.value >= first) return false;
    if (index > 0 && leaf->keys[index - 1] == first) --index;
    // Check pass: every entry that starts inside the range must end inside it. Bounded by the
    // number of entries.
    const std::size_t kept = removed.size();
    for (Cursor at = index < leaf->count ? Cursor(leaf, index) : Cursor(leaf->next, 0);
         !at.at_end() && at->first.value <= last; at.next()) {
        if (at->last.value > last) {
            removed.resize(kept);
            return false;
        }
        removed.push_back(*at);
    }
    const int count = static_cast<int>(removed.size() - kept);
    if (count == 0) return true;
    if (index + count <= leaf->count) {  // all in this leaf: one shift, at most one rebalance
        std::copy(leaf->keys.begin() + index + count, leaf->keys.begin() + leaf->count, leaf->keys.begin() + index);
        std::copy(leaf->values.begin() + index + count, leaf->values.begin() + leaf->count,
                  leaf->values.begin() + index);
        leaf->count -= count;
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
        std::copy_backward(leaf->keys.begin(), leaf->keys.begin() + leaf->count, leaf->keys.begin() + leaf->count + 1);
        std::copy_backward(leaf->values.begin(), leaf->values.begin() + leaf->count,
                           leaf->values.begin() + leaf->count + 1);
        leaf->keys[0] = left->keys[left->count - 1];
        leaf->values[0] = left->values[left->count - 1];
        ++leaf->count;
        --left->count;
        parent->keys[index - 1] = leaf->keys[0];
        return;
    }
    if (right && right->count > kMin) {  // borrow the right sibling's first entry
        leaf->keys[leaf->count] = right->keys[0];
        leaf->values[leaf->count] = right->values[0];
        ++leaf->count;
        std::copy(right->keys.begin() + 1, right->keys.begin() + right->count, right->keys.begin());
        std::copy(right->values.begin() + 1, right->values.begin() + right->count, right->values.begin());
        --right->count;
        parent->keys[index] = right->keys[0];
        return;
    }
    // Merge with a sibling (both at most half full, so the result fits) and drop the right one.
    Leaf* into = left ? left : leaf;
    Leaf* from = left ? leaf : right;
    std::copy(from->keys.begin(), from->keys.begin() + from->count, into->keys.begin() + into->count);
    std::copy(from->values.begin(), from->values.begin() + from->count, into->values.begin() + into->count);
    into->count += from->count;
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
