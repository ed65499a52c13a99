#include "devices/vfio/dma_mapper.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "vmm/error.hpp"

namespace devices::vfio {
namespace {

using iommu::ListenerResult;

constexpr std::uint64_t kDefaultEntryLimit = 65535;  // vfio_iommu_type1 dma_entry_limit default (U16_MAX)
constexpr const char* kEntryLimitParam = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";

ListenerResult from_errno(int err) {
    switch (err) {
        case -ENOSPC:  // dma_entry_limit reached
        case -ENOMEM:  // RLIMIT_MEMLOCK or host memory
            return ListenerResult::NoMemory;
        case -EINVAL:  // outside the host's IOVA ranges, misaligned
        case -EEXIST:  // overlaps a host mapping
            return ListenerResult::Invalid;
        default:
            return ListenerResult::Failed;
    }
}

std::string kib(std::uint64_t bytes) { return std::to_string(bytes >> 10) + " KiB"; }

}  // namespace

DmaMapper::DmaMapper(const vmm::GuestMemory& memory, Kernel& kernel)
    : memory_(memory), kernel_(kernel), memlock_budget_(kernel.memlock_budget()) {}

DmaMapper::~DmaMapper() {
    std::lock_guard guard(lock_);
    for (auto& space : spaces_) teardown(*space);
}

void DmaMapper::teardown(Space& space) {
    if (space.entries == 0 || !space.container) return;
    // One ioctl drops everything the container maps; per-entry unmaps only if that fails.
    if (space.container->unmap_all() != 0) {
        for (const Fragment& f : space.identity_fragments) space.container->unmap_dma(f.iova, f.size);
        for (const auto& [first, mapping] : space.mappings)
            for (const Fragment& f : mapping.fragments) space.container->unmap_dma(f.iova, f.size);
    }
    pinned_ -= std::min(pinned_, space.pinned);
    space.counters.host_unmaps += space.entries;
    space.entries = 0;
    space.pinned = 0;
    space.identity = false;
    space.identity_fragments.clear();
    space.mappings.clear();
}

DmaMapper::Space& DmaMapper::space_for(const std::shared_ptr<Container>& container) {
    for (auto& space : spaces_)
        if (space->container == container) return *space;
    auto space = std::make_unique<Space>();
    space->container = container;
    space->counters.name = container->name();
    // The container is still empty here, so what the host says is left is the whole budget.
    if (container->info().dma_avail) {
        space->entry_limit = *container->info().dma_avail;
    } else if (auto text = kernel_.read_text(kEntryLimitParam)) {
        space->entry_limit = std::strtoull(text->c_str(), nullptr, 10);
    } else {
        space->entry_limit = kDefaultEntryLimit;
    }
    spaces_.push_back(std::move(space));
    return *spaces_.back();
}

void DmaMapper::shutdown() {
    std::lock_guard guard(lock_);
    for (auto& space : spaces_) {
        teardown(*space);
        // The containers close with their groups even if the IOMMU model keeps this mapper.
        space->container.reset();
    }
    shut_down_ = true;
}

DmaMapper::Endpoint* DmaMapper::find(iommu::EndpointId endpoint) {
    auto it = endpoints_.find(endpoint);
    return it == endpoints_.end() ? nullptr : &it->second;
}

void DmaMapper::add_endpoint(iommu::EndpointId endpoint, std::shared_ptr<Container> container) {
    std::lock_guard guard(lock_);
    if (endpoints_.count(endpoint)) throw vmm::SetupError("VFIO DMA: endpoint " + std::to_string(endpoint) + " added twice");
    Space& space = space_for(container);
    space.endpoints.push_back(endpoint);
    endpoints_[endpoint] = Endpoint{&space, Mode::Blocked, 0, false};
}

void DmaMapper::map_all_ram(std::shared_ptr<Container> container) {
    std::lock_guard guard(lock_);
    Space& space = space_for(container);
    if (space.static_identity) return;
    std::vector<Fragment> fragments = identity_fragments(space);
    ListenerResult r = map_fragments(space, fragments, true, true, "guest RAM");
    if (r != ListenerResult::Ok)
        throw vmm::SetupError(space.counters.name + ": cannot map guest RAM for DMA (" + kib(memory_.total_size()) +
                              (r == ListenerResult::NoMemory ? "): the locked-memory limit (ulimit -l) or the VFIO entry limit is too low"
                                                             : "): the host IOMMU refused it"));
    space.static_identity = true;
    space.identity = true;
    space.identity_fragments = std::move(fragments);
}

std::vector<DmaMapper::Fragment> DmaMapper::fragments_for(std::uint64_t iova, std::uint64_t gpa_first,
                                                          std::uint64_t gpa_last) const {
    std::vector<Fragment> out;
    for (const vmm::GuestMemory::Region& r : memory_.regions()) {
        const std::uint64_t first = std::max(gpa_first, r.range.base().value);
        const std::uint64_t last = std::min(gpa_last, r.range.last());
        if (first > last) continue;
        out.push_back({iova + (first - gpa_first), last - first + 1, r.host + (first - r.range.base().value)});
    }
    return out;
}

std::vector<DmaMapper::Fragment> DmaMapper::identity_fragments(const Space& space) const {
    // Guest RAM at IOVA = GPA, minus whatever the host cannot translate (its IOVA holes).
    std::vector<Fragment> out;
    for (const vmm::GuestMemory::Region& r : memory_.regions()) {
        for (const IovaRange& usable : space.container->info().iova_ranges) {
            const std::uint64_t first = std::max(usable.first, r.range.base().value);
            const std::uint64_t last = std::min(usable.last, r.range.last());
            if (first > last) continue;
            out.push_back({first, last - first + 1, r.host + (first - r.range.base().value)});
        }
    }
    return out;
}

ListenerResult DmaMapper::map_fragments(Space& space, const std::vector<Fragment>& fragments, bool reads, bool writes,
                                        const char* what) {
    if (fragments.empty()) return ListenerResult::Ok;
    std::uint64_t bytes = 0;
    for (const Fragment& f : fragments) bytes += f.size;
    std::uint64_t dropped = 0;
    if (space.entries + fragments.size() > space.entry_limit) {
        ++space.counters.budget_refusals;
        if (log_.allow(&dropped))
            vmm::log_warn("vfio: %s: DMA entry budget exhausted (%" PRIu64 " of %" PRIu64
                          " entries in use, vfio_iommu_type1.dma_entry_limit); %s at IOVA 0x%" PRIx64
                          " answered S_NOMEM (%" PRIu64 " similar messages suppressed)",
                          space.counters.name.c_str(), space.entries, space.entry_limit, what, fragments.front().iova,
                          dropped);
        return ListenerResult::NoMemory;
    }
    if (memlock_budget_ && pinned_ + bytes > *memlock_budget_) {
        ++space.counters.budget_refusals;
        if (log_.allow(&dropped))
            vmm::log_warn("vfio: %s: locked-memory budget exhausted (%s pinned, %s more needed, RLIMIT_MEMLOCK allows %s); "
                          "%s at IOVA 0x%" PRIx64 " answered S_NOMEM (%" PRIu64 " similar messages suppressed)",
                          space.counters.name.c_str(), kib(pinned_).c_str(), kib(bytes).c_str(),
                          kib(*memlock_budget_).c_str(), what, fragments.front().iova, dropped);
        return ListenerResult::NoMemory;
    }
    for (std::size_t i = 0; i < fragments.size(); ++i) {
        const Fragment& f = fragments[i];
        const int r = space.container->map_dma(f.iova, f.size, f.host, reads, writes);
        if (r == 0) {
            ++space.counters.host_maps;
            continue;
        }
        ++space.counters.host_failures;
        if (log_.allow(&dropped))
            vmm::log_warn("vfio: %s: VFIO_IOMMU_MAP_DMA of %s at IOVA 0x%" PRIx64 " for %s failed: %s",
                          space.counters.name.c_str(), kib(f.size).c_str(), f.iova, what, std::strerror(-r));
        for (std::size_t j = 0; j < i; ++j) {  // all or nothing
            if (space.container->unmap_dma(fragments[j].iova, fragments[j].size) == 0) ++space.counters.host_unmaps;
            else ++space.counters.host_failures;
        }
        return from_errno(r);
    }
    space.entries += fragments.size();
    space.pinned += bytes;
    pinned_ += bytes;
    return ListenerResult::Ok;
}

ListenerResult DmaMapper::unmap_fragments(Space& space, const std::vector<Fragment>& fragments, bool reads,
                                          bool writes) {
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < fragments.size(); ++i) {
        const Fragment& f = fragments[i];
        const int r = space.container->unmap_dma(f.iova, f.size);
        if (r == 0) {
            ++space.counters.host_unmaps;
            bytes += f.size;
            continue;
        }
        ++space.counters.host_failures;
        vmm::log_error("vfio: %s: VFIO_IOMMU_UNMAP_DMA at IOVA 0x%" PRIx64 " failed: %s", space.counters.name.c_str(),
                       f.iova, std::strerror(-r));
        // Put back what this call removed, so the mapping is whole again (all or nothing).
        for (std::size_t j = 0; j < i; ++j) {
            const Fragment& g = fragments[j];
            if (space.container->map_dma(g.iova, g.size, g.host, reads, writes) == 0) {
                ++space.counters.host_maps;
                bytes -= g.size;
            } else {
                ++space.counters.host_failures;
                vmm::log_error("vfio: %s: cannot restore IOVA 0x%" PRIx64 " after a failed unmap", space.counters.name.c_str(),
                               g.iova);
            }
        }
        space.pinned -= std::min(space.pinned, bytes);
        pinned_ -= std::min(pinned_, bytes);
        return from_errno(r);
    }
    space.entries -= std::min<std::uint64_t>(space.entries, fragments.size());
    space.pinned -= std::min(space.pinned, bytes);
    pinned_ -= std::min(pinned_, bytes);
    return ListenerResult::Ok;
}

std::optional<iommu::DomainId> DmaMapper::translated_domain(const Space& space, iommu::EndpointId except) const {
    for (iommu::EndpointId id : space.endpoints) {
        if (id == except) continue;
        const Endpoint& e = endpoints_.at(id);
        if (e.mode == Mode::Domain) return e.domain;
    }
    return std::nullopt;
}

ListenerResult DmaMapper::reconcile_identity(Space& space) {
    if (space.static_identity) return ListenerResult::Ok;
    bool want = false;
    bool translated = false;
    for (iommu::EndpointId id : space.endpoints) {
        const Endpoint& e = endpoints_.at(id);
        translated |= e.mode == Mode::Domain;
        want |= (e.mode == Mode::Bypass || e.mode == Mode::BypassDomain) && e.bus_master;
    }
    // A translated member owns the space's IOVAs: identity cannot coexist with its mappings.
    want &= !translated;
    if (want == space.identity) return ListenerResult::Ok;
    if (want) {
        std::vector<Fragment> fragments = identity_fragments(space);
        ListenerResult r = map_fragments(space, fragments, true, true, "bypass (identity map of guest RAM)");
        if (r != ListenerResult::Ok) return r;
        space.identity = true;
        space.identity_fragments = std::move(fragments);
        vmm::log_debug("vfio: %s: bypass: guest RAM mapped one to one", space.counters.name.c_str());
        return r;
    }
    ListenerResult r = unmap_fragments(space, space.identity_fragments, true, true);
    if (r != ListenerResult::Ok) return r;
    space.identity = false;
    space.identity_fragments.clear();
    vmm::log_debug("vfio: %s: bypass identity map dropped", space.counters.name.c_str());
    return r;
}

ListenerResult DmaMapper::release_holder(Space& space, iommu::EndpointId endpoint) {
    std::vector<std::uint64_t> released;  // mappings this call removed from the host
    for (auto& [first, mapping] : space.mappings) {
        auto holder = std::find(mapping.holders.begin(), mapping.holders.end(), endpoint);
        if (holder == mapping.holders.end()) continue;
        if (mapping.holders.size() > 1) continue;  // another endpoint of the space keeps it
        const bool reads = mapping.mapping.flags & iommu::kMapRead, writes = mapping.mapping.flags & iommu::kMapWrite;
        ListenerResult r = unmap_fragments(space, mapping.fragments, reads, writes);
        if (r != ListenerResult::Ok) {
            // All or nothing: map back what this call already removed.
            for (std::uint64_t key : released) {
                HostMapping& back = space.mappings.at(key);
                const bool br = back.mapping.flags & iommu::kMapRead, bw = back.mapping.flags & iommu::kMapWrite;
                if (map_fragments(space, back.fragments, br, bw, "rollback") != ListenerResult::Ok)
                    vmm::log_error("vfio: %s: cannot restore IOVA 0x%" PRIx64 " after a failed detach",
                                   space.counters.name.c_str(), key);
            }
            return r;
        }
        released.push_back(first);
    }
    for (auto it = space.mappings.begin(); it != space.mappings.end();) {
        std::erase(it->second.holders, endpoint);
        it = it->second.holders.empty() ? space.mappings.erase(it) : std::next(it);
    }
    return ListenerResult::Ok;
}

ListenerResult DmaMapper::detach(iommu::EndpointId id, bool bypass) {
    std::lock_guard guard(lock_);
    if (shut_down_) return ListenerResult::Ok;
    Endpoint* e = find(id);
    if (!e) return ListenerResult::Failed;
    Space& space = *e->space;
    const Endpoint before = *e;
    // Leaving a translated domain for bypass is two host steps (drop its mappings, map RAM);
    // keep what the first removed so that a refused second step can be undone.
    std::map<std::uint64_t, HostMapping> kept;
    if (e->mode == Mode::Domain) {
        if (bypass) kept = space.mappings;
        ListenerResult r = release_holder(space, id);
        if (r != ListenerResult::Ok) return r;
    }
    e->mode = bypass ? Mode::Bypass : Mode::Blocked;
    ListenerResult r = reconcile_identity(space);
    if (r == ListenerResult::Ok) return r;
    *e = before;
    for (auto& [first, mapping] : kept) {
        auto it = space.mappings.find(first);
        if (it != space.mappings.end()) {
            it->second.holders = mapping.holders;
            continue;
        }
        const bool reads = mapping.mapping.flags & iommu::kMapRead, writes = mapping.mapping.flags & iommu::kMapWrite;
        if (map_fragments(space, mapping.fragments, reads, writes, "rollback") == ListenerResult::Ok)
            space.mappings.emplace(first, std::move(mapping));
        else
            vmm::log_error("vfio: %s: endpoint %u: cannot restore IOVA 0x%" PRIx64 " after a refused bypass",
                           space.counters.name.c_str(), id, first);
    }
    return r;
}

ListenerResult DmaMapper::attach(iommu::EndpointId id, iommu::DomainId domain, bool bypass) {
    std::lock_guard guard(lock_);
    if (shut_down_) return ListenerResult::Ok;
    Endpoint* e = find(id);
    if (!e) return ListenerResult::Failed;
    Space& space = *e->space;
    if (!bypass) {
        auto other = translated_domain(space, id);
        if (other && *other != domain) {
            std::uint64_t dropped = 0;
            if (log_.allow(&dropped))
                vmm::log_warn("vfio: %s: endpoint %u cannot join domain %u while another function of its host IOMMU "
                              "group is in domain %u (the host cannot isolate them); ATTACH answered S_INVAL",
                              space.counters.name.c_str(), id, domain, *other);
            return ListenerResult::Invalid;
        }
    }
    const Endpoint before = *e;
    e->mode = bypass ? Mode::BypassDomain : Mode::Domain;
    e->domain = domain;
    ListenerResult r = reconcile_identity(space);
    if (r != ListenerResult::Ok) *e = before;
    return r;
}

ListenerResult DmaMapper::map(iommu::EndpointId id, const iommu::Mapping& mapping) {
    std::lock_guard guard(lock_);
    if (shut_down_) return ListenerResult::Ok;
    Endpoint* e = find(id);
    if (!e || e->mode != Mode::Domain) return ListenerResult::Failed;
    Space& space = *e->space;
    auto it = space.mappings.find(mapping.first.value);
    if (it != space.mappings.end()) {
        // Another endpoint of this container (same guest domain) already put it in the host.
        if (!(it->second.mapping == mapping)) return ListenerResult::Invalid;
        if (std::find(it->second.holders.begin(), it->second.holders.end(), id) == it->second.holders.end()) {
            it->second.holders.push_back(id);
            ++space.counters.shared_hits;
        }
        return ListenerResult::Ok;
    }
    const bool reads = mapping.flags & iommu::kMapRead, writes = mapping.flags & iommu::kMapWrite;
    HostMapping host{mapping, {}, {id}};
    // MMIO mappings (the guest's MSI doorbell) and mappings nobody may use are kept in the model
    // only: VFIO cannot map device memory of the guest, and refuses maps without R or W.
    if ((reads || writes) && !(mapping.flags & iommu::kMapMmio)) {
        host.fragments = fragments_for(mapping.first.value, mapping.gpa.value,
                                       mapping.gpa.value + (mapping.last.value - mapping.first.value));
        ListenerResult r = map_fragments(space, host.fragments, reads, writes, "MAP");
        if (r != ListenerResult::Ok) return r;
    }
    space.mappings.emplace(mapping.first.value, std::move(host));
    return ListenerResult::Ok;
}

ListenerResult DmaMapper::unmap(iommu::EndpointId id, const iommu::Mapping& mapping) {
    std::lock_guard guard(lock_);
    if (shut_down_) return ListenerResult::Ok;
    Endpoint* e = find(id);
    if (!e || e->mode != Mode::Domain) return ListenerResult::Failed;
    Space& space = *e->space;
    auto it = space.mappings.find(mapping.first.value);
    if (it == space.mappings.end() || !(it->second.mapping == mapping)) return ListenerResult::Failed;
    auto& holders = it->second.holders;
    auto holder = std::find(holders.begin(), holders.end(), id);
    if (holder == holders.end()) return ListenerResult::Failed;
    if (holders.size() == 1) {
        const bool reads = mapping.flags & iommu::kMapRead, writes = mapping.flags & iommu::kMapWrite;
        ListenerResult r = unmap_fragments(space, it->second.fragments, reads, writes);
        if (r != ListenerResult::Ok) return r;
        space.mappings.erase(it);
        return ListenerResult::Ok;
    }
    holders.erase(holder);
    return ListenerResult::Ok;
}

void DmaMapper::set_bus_master(iommu::EndpointId id, bool enabled) {
    std::lock_guard guard(lock_);
    if (shut_down_) return;
    Endpoint* e = find(id);
    if (!e || e->bus_master == enabled) return;
    e->bus_master = enabled;
    if (reconcile_identity(*e->space) != ListenerResult::Ok)
        vmm::log_warn("vfio: %s: endpoint %u: bypass needs guest RAM mapped but the host refused; its DMA will fault",
                      e->space->counters.name.c_str(), id);
}

DmaMapperStats DmaMapper::stats() const {
    std::lock_guard guard(lock_);
    DmaMapperStats out;
    out.pinned_bytes = pinned_;
    out.memlock_budget = memlock_budget_;
    for (const auto& space : spaces_) {
        DmaSpaceStats s = space->counters;
        s.endpoints = space->endpoints;
        s.identity = space->identity;
        s.domain = translated_domain(*space, ~iommu::EndpointId{0});
        s.guest_mappings = space->mappings.size();
        s.host_mappings = space->entries;
        s.entry_limit = space->entry_limit;
        s.pinned_bytes = space->pinned;
        out.spaces.push_back(std::move(s));
    }
    return out;
}

std::string DmaMapper::describe() const {
    std::string text;
    for (const DmaSpaceStats& s : stats().spaces) {
        char line[512];
        std::snprintf(line, sizeof line,
                      "vfio %s: %s, %" PRIu64 " guest mappings, %" PRIu64 "/%" PRIu64 " host entries, %" PRIu64
                      " KiB pinned, host maps %" PRIu64 " unmaps %" PRIu64 ", shared %" PRIu64 ", refused %" PRIu64
                      ", host failures %" PRIu64 "\n",
                      s.name.c_str(),
                      s.identity ? "identity" : (s.domain ? ("domain " + std::to_string(*s.domain)).c_str() : "empty"),
                      s.guest_mappings, s.host_mappings, s.entry_limit, s.pinned_bytes >> 10, s.host_maps, s.host_unmaps,
                      s.shared_hits, s.budget_refusals, s.host_failures);
        text += line;
    }
    return text;
}

}  // namespace devices::vfio
