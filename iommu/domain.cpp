// iommu::Domain: interval map with the MAP/UNMAP rules of virtio 1.2 5.13.6.5-5.13.6.6.
#include "iommu/domain.hpp"

#include <algorithm>

namespace iommu {

bool Domain::overlaps(std::uint64_t first, std::uint64_t last) const {
    // The mapping starting at or before `first` is the only one that can contain it; the one after
    // it is the only one that can start inside (first, last].
    MappingTree::Cursor at = mappings_.floor(first);
    if (!at.at_end()) {
        if (at->last.value >= first) return true;
        at.next();
    } else {
        at = mappings_.begin();
    }
    return !at.at_end() && at->first.value <= last;
}

const Mapping* Domain::find(std::uint64_t iova) const {
    MappingTree::Cursor at = mappings_.floor(iova);
    return !at.at_end() && at->last.value >= iova ? &*at : nullptr;
}

std::vector<Mapping> Domain::overlapping(std::uint64_t first, std::uint64_t last) const {
    std::vector<Mapping> found;
    MappingTree::Cursor at = mappings_.floor(first);
    if (at.at_end()) at = mappings_.begin();
    else if (at->last.value < first) at.next();
    for (; !at.at_end() && at->first.value <= last; at.next()) found.push_back(*at);
    return found;
}

std::vector<Mapping> Domain::mappings() const {
    std::vector<Mapping> all;
    all.reserve(mappings_.size());
    all_of([&](const Mapping& mapping) {
        all.push_back(mapping);
        return true;
    });
    return all;
}

void Domain::add_member(EndpointId endpoint, MapListener* listener) {
    members_.push_back({endpoint, listener});
    if (listener) listener_members_.push_back({endpoint, listener});
}

void Domain::remove_member(EndpointId endpoint) {
    auto is_it = [endpoint](const Member& m) { return m.endpoint == endpoint; };
    members_.erase(std::remove_if(members_.begin(), members_.end(), is_it), members_.end());
    listener_members_.erase(std::remove_if(listener_members_.begin(), listener_members_.end(), is_it),
                            listener_members_.end());
}

}  // namespace iommu
