// iommu::Domain: one virtio-iommu address space, an interval map IOVA -> (GPA, flags) with the
// spec's rules: mappings never overlap (MAP, virtio 1.2 5.13.6.5) and are only ever removed
// whole (UNMAP, 5.13.6.6). Lookup, insert and remove are O(log n) in the number of mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "iommu/map_listener.hpp"
#include "iommu/mapping_tree.hpp"
#include "iommu/types.hpp"

namespace iommu {

// Not thread-safe: the owning Iommu serialises access (see iommu.hpp).
class Domain {
public:
    Domain(DomainId id, bool bypass) : id_(id), bypass_(bypass) {}
    Domain(const Domain&) = delete;
    Domain& operator=(const Domain&) = delete;

    DomainId id() const { return id_; }
    // A bypass domain (ATTACH_F_BYPASS) has no mappings; its endpoints access GPAs one to one.
    bool is_bypass() const { return bypass_; }
    std::size_t mapping_count() const { return mappings_.size(); }

    // Does any mapping share an address with [first, last]? (first <= last)
    bool overlaps(std::uint64_t first, std::uint64_t last) const;
    // MAP: adds the mapping unless it overlaps one (CONFORMANCE.md D30); false and no change if it
    // does.
    bool insert_if_free(const Mapping& mapping) { return mappings_.insert_if_free(mapping); }
    // Undo helpers: put back / take out mappings exactly as they were.
    void insert(const Mapping& mapping) { mappings_.insert(mapping); }
    void erase(const Mapping& mapping) { mappings_.erase(mapping.first.value); }

    // UNMAP: removes every mapping inside [first, last], appending them to `removed` in IOVA
    // order, and returns Ok; or returns Range and changes nothing if a mapping straddles either
    // end, since UNMAP never splits a mapping (5.13.6.6: check before any side effect).
    Status remove_range(std::uint64_t first, std::uint64_t last, std::vector<Mapping>& removed) {
        return mappings_.remove_range(first, last, removed) ? Status::Ok : Status::Range;
    }
    void clear() { mappings_.clear(); }

    // The mapping that contains `iova`, or null. The pointer is valid until the next change.
    const Mapping* find(std::uint64_t iova) const;
    // The mappings that share an address with [first, last], in IOVA order.
    std::vector<Mapping> overlapping(std::uint64_t first, std::uint64_t last) const;

    // Calls fn on each mapping in IOVA order until it returns false; true if it never did.
    // Bounded by the number of mappings.
    template <class Fn>
    bool all_of(Fn&& fn) const {
        for (MappingTree::Cursor it = mappings_.begin(); !it.at_end(); it.next())
            if (!fn(*it)) return false;
        return true;
    }
    std::vector<Mapping> mappings() const;

    // Endpoints currently attached, in attach order; and those among them that have a listener.
    struct Member {
        EndpointId endpoint;
        MapListener* listener;  // null for emulated endpoints
    };
    const std::vector<Member>& members() const { return members_; }
    const std::vector<Member>& listener_members() const { return listener_members_; }
    void add_member(EndpointId endpoint, MapListener* listener);
    void remove_member(EndpointId endpoint);

private:
    DomainId id_;
    bool bypass_;
    // Keyed by the first IOVA of each mapping; mappings are disjoint, so the predecessor of an
    // address is the only candidate that can contain it.
    MappingTree mappings_;
    std::vector<Member> members_;
    std::vector<Member> listener_members_;
};

}  // namespace iommu
