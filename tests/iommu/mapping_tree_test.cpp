// iommu::MappingTree (B+ tree) against std::map as the reference: random inserts and erases deep
// enough to split and merge inner nodes, with floor/upper_bound/iteration checked throughout.
#include "iommu/mapping_tree.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>

#include "tests/support/mapping_tree_model.hpp"

using iommu::Mapping;
using iommu::MappingTree;

namespace {

Mapping entry(std::uint64_t key) { return {vmm::Iova{key}, vmm::Iova{key}, vmm::GuestPhysAddr{key ^ 0x5555}, 1}; }

void check_same(const MappingTree& tree, const std::map<std::uint64_t, Mapping>& reference) {
    REQUIRE(tree.size() == reference.size());
    auto it = reference.begin();
    std::size_t n = 0;
    for (MappingTree::Cursor c = tree.begin(); !c.at_end(); c.next(), ++it, ++n) {
        REQUIRE(it != reference.end());
        REQUIRE(c->first.value == it->first);
        REQUIRE(*c == it->second);
    }
    CHECK(n == reference.size());
}

void check_queries(const MappingTree& tree, const std::map<std::uint64_t, Mapping>& reference, std::uint64_t key) {
    auto upper = reference.upper_bound(key);
    MappingTree::Cursor c = tree.upper_bound(key);
    REQUIRE(c.at_end() == (upper == reference.end()));
    if (!c.at_end()) CHECK(c->first.value == upper->first);
    MappingTree::Cursor f = tree.floor(key);
    REQUIRE(f.at_end() == (upper == reference.begin()));
    if (!f.at_end()) CHECK(f->first.value == std::prev(upper)->first);
    if (!f.at_end()) {  // stepping back and forth across leaves
        MappingTree::Cursor g = f;
        g.next();
        CHECK(g.at_end() == c.at_end());
        if (!g.at_end()) CHECK(g->first.value == c->first.value);
    }
}

}  // namespace

TEST_CASE("MappingTree matches std::map through growth to several levels and back to empty") {
    std::mt19937_64 rng(7);
    MappingTree tree;
    std::map<std::uint64_t, Mapping> reference;
    CHECK(tree.floor(5).at_end());
    CHECK(tree.upper_bound(5).at_end());
    CHECK_FALSE(tree.erase(5));
    std::vector<std::uint64_t> keys;
    for (int i = 0; i < 60000; ++i) {
        std::uint64_t key = rng() % 1'000'000;
        if (i % 1000 == 0) key = (i % 2000 == 0) ? 0 : ~std::uint64_t{0};  // the extremes too
        if (reference.count(key)) continue;
        tree.insert(entry(key));
        reference.emplace(key, entry(key));
        keys.push_back(key);
        if (i % 997 == 0) check_same(tree, reference);
        if (i % 13 == 0) check_queries(tree, reference, rng() % 1'000'000);
    }
    check_same(tree, reference);
    for (int i = 0; i < 2000; ++i) check_queries(tree, reference, rng() % 1'100'000);
    check_queries(tree, reference, 0);
    check_queries(tree, reference, ~std::uint64_t{0});
    // Erase in random order, with misses, down to nothing (merges and root collapses).
    std::shuffle(keys.begin(), keys.end(), rng);
    for (std::size_t i = 0; i < keys.size(); ++i) {
        CHECK_FALSE(tree.erase(keys[i] + 1'000'001));
        REQUIRE(tree.erase(keys[i]));
        reference.erase(keys[i]);
        if (i % 1499 == 0) check_same(tree, reference);
        if (i % 17 == 0) check_queries(tree, reference, rng() % 1'000'000);
    }
    CHECK(tree.empty());
    CHECK(tree.begin().at_end());
}

TEST_CASE("MappingTree survives sequential patterns that stress one edge of the tree") {
    MappingTree tree;
    std::map<std::uint64_t, Mapping> reference;
    for (std::uint64_t k = 0; k < 20000; ++k) {  // always appending at the right edge
        tree.insert(entry(k * 4096));
        reference.emplace(k * 4096, entry(k * 4096));
    }
    for (std::uint64_t k = 0; k < 20000; k += 2) {  // punch holes everywhere
        REQUIRE(tree.erase(k * 4096));
        reference.erase(k * 4096);
    }
    check_same(tree, reference);
    for (std::uint64_t k = 20000; k-- > 0;) {  // drain from the right edge
        if (k % 2 == 0) continue;
        REQUIRE(tree.erase(k * 4096));
        reference.erase(k * 4096);
        if (k % 1001 == 1) check_same(tree, reference);
    }
    CHECK(tree.empty());
    for (std::uint64_t k = 5000; k-- > 0;) tree.insert(entry(k));  // prepending at the left edge
    CHECK(tree.size() == 5000);
    CHECK(tree.floor(4999)->first.value == 4999);
    tree.clear();
    CHECK(tree.empty());
}

// A randomized differential run of every interval operation against std::map
// (tests/support/mapping_tree_model.hpp); the fuzz target fuzz_mapping_tree runs the same harness
// for millions of operations.
TEST_CASE("MappingTree agrees with std::map on random clustered insert_if_free/erase/remove_range/floor/upper_bound") {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
        std::mt19937_64 rng(seed);
        support::MappingTreeModel model;
        std::size_t largest = 0;
        for (int i = 0; i < 50'000; ++i) {
            // Phases that grow (mostly inserts) and shrink (mostly removals) the tree, so it keeps
            // crossing node boundaries in both directions.
            const bool growing = (i / 5000) % 2 == 0;
            const unsigned roll = static_cast<unsigned>(rng() % 10);
            using Op = support::MappingTreeModel::Op;
            Op op = Op::Floor;
            if (roll < (growing ? 5u : 2u)) op = Op::InsertIfFree;
            else if (roll < 6) op = Op::Erase;
            else if (roll < 8) op = (growing ? Op::UpperBound : Op::RemoveRange);
            else if (roll < 9) op = Op::UpperBound;
            const std::string error = model.step(op, rng(), rng());
            REQUIRE_MESSAGE(error.empty(), "seed ", seed, " op ", i, ": ", error);
            if (i % 2500 == 0) REQUIRE(model.check_all().empty());
            largest = std::max(largest, model.size());
        }
        REQUIRE(model.check_all().empty());
        CHECK(largest > 1100);  // three levels: more leaves than one inner node holds (32 x 32)
    }
}
