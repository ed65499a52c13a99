// iommu::Domain: interval map with the MAP/UNMAP rules of virtio 1.2 5.13.6.5-5.13.6.6.
#include "iommu/domain.hpp"

#include <algorithm>
#include <iterator>

namespace iommu {

bool Domain::overlaps(std::uint64_t first, std::uint64_t last) const {
    // The first mapping that starts after `first`; its predecessor is the only mapping starting
    // at or before `first`, so it is the only one that can contain `first`.
    auto next = mappings_.upper_bound(first);
    if (next != mappings_.end() && next->first <= last) return true;
    if (next == mappings_.begin()) return false;
    return std::prev(next)->second.last.value >= first;
}

void Domain::insert(const Mapping& mapping) {
    auto hint = mappings_.upper_bound(mapping.first.value);
    mappings_.emplace_hint(hint, mapping.first.value, mapping);
}

Status Domain::collect_unmap(std::uint64_t first, std::uint64_t last, std::vector<Mapping>& out) const {
    auto it = mappings_.upper_bound(first);
    if (it != mappings_.begin()) {
        const Mapping& before = std::prev(it)->second;
        // Starts before the range and reaches into it: removing it would split it (example 4).
        if (before.first.value < first && before.last.value >= first) return Status::Range;
        if (before.first.value == first) it = std::prev(it);
    }
    const std::size_t kept = out.size();
    // Bounded by the number of mappings in the domain (itself capped).
    for (; it != mappings_.end() && it->first <= last; ++it) {
        if (it->second.last.value > last) {
            out.resize(kept);
            return Status::Range;
        }
        out.push_back(it->second);
    }
    return Status::Ok;
}

void Domain::erase(const std::vector<Mapping>& mappings) {
    for (const Mapping& mapping : mappings) mappings_.erase(mapping.first.value);
}

const Mapping* Domain::find(std::uint64_t iova) const {
    auto it = mappings_.upper_bound(iova);
    if (it == mappings_.begin()) return nullptr;
    const Mapping& candidate = std::prev(it)->second;
    return candidate.last.value >= iova ? &candidate : nullptr;
}

std::vector<Mapping> Domain::mappings() const {
    std::vector<Mapping> all;
    all.reserve(mappings_.size());
    for (const auto& [first, mapping] : mappings_) all.push_back(mapping);
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
