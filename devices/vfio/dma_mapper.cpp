#include "devices/vfio/dma_mapper.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <utility>

#include "vmm/base/error.hpp"

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
        default: return ListenerResult::Failed;
    }
}

std::string kib(std::uint64_t bytes) { return std::to_string(bytes >> 10) + " KiB"; }

}  // namespace

DmaMapper::DmaMapper(const vmm::GuestMemory& memory, Host& host)
    : memory_(memory), host_(host), memlock_budget_(host.memlock_budget()) {}

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
    } else if (auto text = host_.read_text(kEntryLimitParam)) {
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
    if (endpoints_.count(endpoint))
        throw vmm::SetupError("VFIO DMA: endpoint " + std::to_string(endpoint) + " added twice");
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
                              (r == ListenerResult::NoMemory
                                   ? "): the locked-memory limit (ulimit -l) or the VFIO entry limit is too low"
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

std::vector<DmaMapper::Fragment> DmaMapper::fragments_for(const iommu::Mapping& mapping) const {
    // MMIO mappings (the guest's MSI doorbell) and mappings nobody may use are kept in the model
    // only: VFIO cannot map device memory of the guest, and refuses maps without R or W.
    if (!(mapping.flags & (iommu::kMapRead | iommu::kMapWrite)) || (mapping.flags & iommu::kMapMmio)) return {};
    return fragments_for(mapping.first.value, mapping.gpa.value,
                         mapping.gpa.value + (mapping.last.value - mapping.first.value));
}

bool DmaMapper::fits(Space& space, std::uint64_t entries, std::uint64_t bytes, const char* what, std::uint64_t iova) {
    std::uint64_t dropped = 0;
    if (space.entries + entries > space.entry_limit) {
        ++space.counters.budget_refusals;
        if (log_.allow(&dropped))
            vmm::log_warn("vfio: %s: DMA entry budget exhausted (%" PRIu64 " of %" PRIu64 " entries in use, %" PRIu64
                          " more needed, vfio_iommu_type1.dma_entry_limit); %s at IOVA 0x%" PRIx64
                          " answered S_NOMEM (%" PRIu64 " similar messages suppressed)",
                          space.counters.name.c_str(), space.entries, space.entry_limit, entries, what, iova, dropped);
        return false;
    }
    if (memlock_budget_ && pinned_ + bytes > *memlock_budget_) {
        ++space.counters.budget_refusals;
        if (log_.allow(&dropped))
            vmm::log_warn(
                "vfio: %s: locked-memory budget exhausted (%s pinned, %s more needed, RLIMIT_MEMLOCK allows %s); "
                "%s at IOVA 0x%" PRIx64 " answered S_NOMEM (%" PRIu64 " similar messages suppressed)",
                space.counters.name.c_str(), kib(pinned_).c_str(), kib(bytes).c_str(), kib(*memlock_budget_).c_str(),
                what, iova, dropped);
        return false;
    }
    return true;
}

void DmaMapper::warn_if_near_budget(Space& space) {
    // Once per container: at 90 % of a budget, say what runs out and how to raise it, before
    // the guest's MAPs start failing (which guests since Linux 6.8 do not notice). Not a larger
    // granule: Linux refuses one above its page size (drivers/iommu/virtio-iommu.c), and the
    // default mask already lets it map a contiguous buffer in one MAP. The host reads
    // dma_entry_limit when a container is opened (drivers/vfio/vfio_iommu_type1.c), so a new
    // value takes effect when lkvm starts again.
    if (space.near_limit_warned) return;
    const bool entries_near = space.entries * 10 >= space.entry_limit * 9;
    const bool memlock_near = memlock_budget_ && pinned_ * 10 >= *memlock_budget_ * 9;
    if (!entries_near && !memlock_near) return;
    space.near_limit_warned = true;
    vmm::log_warn("vfio: %s: DMA budget nearly used: %" PRIu64 " of %" PRIu64
                  " host entries (vfio_iommu_type1.dma_entry_limit), %s pinned of %s (RLIMIT_MEMLOCK); MAPs beyond "
                  "are refused. Before the next start of lkvm raise the module parameter dma_entry_limit "
                  "(/sys/module/vfio_iommu_type1/parameters/dma_entry_limit) or ulimit -l; or, if the guest needs "
                  "no DMA isolation for this device, leave it out of the vIOMMU (--viommu virtio) or boot the guest "
                  "with iommu.passthrough=1 (guest RAM mapped once, in a few entries, and pinned whole)",
                  space.counters.name.c_str(), space.entries, space.entry_limit, kib(pinned_).c_str(),
                  memlock_budget_ ? kib(*memlock_budget_).c_str() : "unlimited");
}

ListenerResult DmaMapper::map_fragments(Space& space, const std::vector<Fragment>& fragments, bool reads, bool writes,
                                        const char* what) {
    if (fragments.empty()) return ListenerResult::Ok;
    std::uint64_t bytes = 0;
    for (const Fragment& f : fragments) bytes += f.size;
    if (!fits(space, fragments.size(), bytes, what, fragments.front().iova)) return ListenerResult::NoMemory;
    for (std::size_t i = 0; i < fragments.size(); ++i) {
        const Fragment& f = fragments[i];
        const int r = space.container->map_dma(f.iova, f.size, f.host, reads, writes);
        if (r == 0) {
            ++space.counters.host_maps;
            ++space.entries;
            space.pinned += f.size;
            pinned_ += f.size;
            continue;
        }
        ++space.counters.host_failures;
        std::uint64_t dropped = 0;
        if (log_.allow(&dropped))
            vmm::log_warn("vfio: %s: VFIO_IOMMU_MAP_DMA of %s at IOVA 0x%" PRIx64 " for %s failed: %s",
                          space.counters.name.c_str(), kib(f.size).c_str(), f.iova, what, std::strerror(-r));
        // All or nothing; no record holds these fragments yet, so a rebuild drops them too.
        drop(space, std::vector<Fragment>(fragments.begin(), fragments.begin() + static_cast<std::ptrdiff_t>(i)));
        return from_errno(r);
    }
    warn_if_near_budget(space);
    return ListenerResult::Ok;
}

void DmaMapper::account_unmapped(Space& space, const Fragment& fragment) {
    ++space.counters.host_unmaps;
    space.entries -= std::min<std::uint64_t>(space.entries, 1);
    space.pinned -= std::min(space.pinned, fragment.size);
    pinned_ -= std::min(pinned_, fragment.size);
}

bool DmaMapper::drop(Space& space, const std::vector<Fragment>& fragments) {
    if (fragments.empty()) return true;
    // Nothing else in the container (e.g. a blocked endpoint's whole domain): one ioctl.
    if (space.entries == fragments.size() && space.container->unmap_all() == 0) {
        for (const Fragment& f : fragments) account_unmapped(space, f);
        return true;
    }
    bool failed = false;
    for (const Fragment& f : fragments) {
        int r = space.container->unmap_dma(f.iova, f.size);
        if (r != 0) {
            ++space.counters.host_failures;
            r = space.container->unmap_dma(f.iova, f.size);  // once more: the failure may be transient
        }
        if (r == 0) {
            account_unmapped(space, f);
            continue;
        }
        ++space.counters.host_failures;
        vmm::log_error("vfio: %s: VFIO_IOMMU_UNMAP_DMA at IOVA 0x%" PRIx64 " failed twice: %s; emptying the container",
                       space.counters.name.c_str(), f.iova, std::strerror(-r));
        failed = true;
    }
    return !failed || rebuild(space);
}

bool DmaMapper::rebuild(Space& space) {
    ++space.counters.rebuilds;
    if (space.container->unmap_all() != 0 && space.container->unmap_all() != 0) {
        ++space.counters.stale;
        vmm::log_error("vfio: %s: the host refuses to unmap; the container may keep stale DMA entries",
                       space.counters.name.c_str());
        return false;
    }
    space.counters.host_unmaps += space.entries;
    pinned_ -= std::min(pinned_, space.pinned);
    space.entries = 0;
    space.pinned = 0;
    // Refill with what the records hold; whatever cannot be mapped again is left out of the
    // host (never more than the records, which never exceed what the model allows).
    auto refill = [&](std::vector<Fragment>& fragments, bool reads, bool writes) {
        std::erase_if(fragments, [&](const Fragment& f) {
            if (space.container->map_dma(f.iova, f.size, f.host, reads, writes) != 0) {
                ++space.counters.host_failures;
                return true;
            }
            ++space.counters.host_maps;
            ++space.entries;
            space.pinned += f.size;
            pinned_ += f.size;
            return false;
        });
    };
    if (space.identity) {
        refill(space.identity_fragments, true, true);
        space.identity = !space.identity_fragments.empty();
    }
    for (auto& [first, mapping] : space.mappings) {
        const std::size_t before = mapping.fragments.size();
        refill(mapping.fragments, mapping.mapping.flags & iommu::kMapRead, mapping.mapping.flags & iommu::kMapWrite);
        if (mapping.fragments.size() != before) ++space.counters.lost_mappings;
    }
    return true;
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
    space.identity = false;
    drop(space, std::exchange(space.identity_fragments, {}));
    vmm::log_debug("vfio: %s: bypass identity map dropped", space.counters.name.c_str());
    return ListenerResult::Ok;
}

bool DmaMapper::release_holder(Space& space, iommu::EndpointId endpoint) {
    std::vector<Fragment> released;  // host entries no other endpoint of the space holds
    for (auto it = space.mappings.begin(); it != space.mappings.end();) {
        std::erase(it->second.holders, endpoint);
        if (!it->second.holders.empty()) {
            ++it;
            continue;
        }
        released.insert(released.end(), it->second.fragments.begin(), it->second.fragments.end());
        it = space.mappings.erase(it);
    }
    return drop(space, released);
}

void DmaMapper::block(Endpoint& e, iommu::EndpointId id) {
    release_holder(*e.space, id);
    e.mode = Mode::Blocked;
    reconcile_identity(*e.space);  // only ever drops the identity map here
}

template <class Fn>
ListenerResult DmaMapper::with_endpoint(iommu::EndpointId id, bool translated_only, Fn&& fn) {
    std::lock_guard guard(lock_);
    if (shut_down_) return ListenerResult::Ok;
    Endpoint* e = find(id);
    if (!e || (translated_only && e->mode != Mode::Domain)) return ListenerResult::Failed;
    return fn(*e, *e->space);
}

ListenerResult DmaMapper::detach(iommu::EndpointId id, bool bypass) {
    return with_endpoint(id, false, [&](Endpoint& e, Space& space) {
        const bool clean = release_holder(space, id);
        e.mode = bypass ? Mode::Bypass : Mode::Blocked;
        ListenerResult r = reconcile_identity(space);
        // Bypass refused (the identity map does not fit): blocked, never the old domain.
        if (r != ListenerResult::Ok && bypass) {
            block(e, id);
            return r;
        }
        // Blocked: done once nothing of the endpoint is left, whether or not an identity map a
        // container-mate wants could be made.
        return clean ? ListenerResult::Ok : ListenerResult::Failed;
    });
}

ListenerResult DmaMapper::replay(Space& space, iommu::EndpointId id, const iommu::MappingSource& mappings) {
    // Pass 1, no host call: what the host must add (a container-mate in the same domain already
    // holds every mapping). One ATTACH can then cost at most the budget's worth of MAP_DMA.
    std::uint64_t entries = 0, bytes = 0, first_iova = 0;
    bool conflict = false;
    mappings.all_of([&](const iommu::Mapping& mapping) {
        auto it = space.mappings.find(mapping.first.value);
        if (it != space.mappings.end()) {
            conflict = !(it->second.mapping == mapping);
            return !conflict;
        }
        for (const Fragment& f : fragments_for(mapping)) {
            if (entries == 0) first_iova = f.iova;
            ++entries;
            bytes += f.size;
        }
        return true;
    });
    if (conflict) return ListenerResult::Invalid;
    if (!fits(space, entries, bytes, "ATTACH (replay of the domain's mappings)", first_iova))
        return ListenerResult::NoMemory;
    // Pass 2.
    ListenerResult result = ListenerResult::Ok;
    mappings.all_of([&](const iommu::Mapping& mapping) {
        auto it = space.mappings.find(mapping.first.value);
        if (it != space.mappings.end()) {
            if (std::find(it->second.holders.begin(), it->second.holders.end(), id) == it->second.holders.end())
                it->second.holders.push_back(id);
            return true;
        }
        HostMapping host{mapping, fragments_for(mapping), {id}};
        result = map_fragments(space, host.fragments, mapping.flags & iommu::kMapRead, mapping.flags & iommu::kMapWrite,
                               "ATTACH replay");
        if (result != ListenerResult::Ok) return false;
        space.mappings.emplace(mapping.first.value, std::move(host));
        return true;
    });
    return result;
}

ListenerResult DmaMapper::attach(iommu::EndpointId id, iommu::DomainId domain, bool bypass,
                                 const iommu::MappingSource& mappings) {
    return with_endpoint(id, false, [&](Endpoint& e, Space& space) {
        ListenerResult r = ListenerResult::Ok;
        const auto other = bypass ? std::nullopt : translated_domain(space, id);
        if (other && *other != domain) {
            std::uint64_t dropped = 0;
            if (log_.allow(&dropped))
                vmm::log_warn(
                    "vfio: %s: endpoint %u cannot join domain %u while another function of its host IOMMU "
                    "group is in domain %u (the host cannot isolate them); ATTACH answered S_INVAL",
                    space.counters.name.c_str(), id, domain, *other);
            r = ListenerResult::Invalid;
        } else {
            e.mode = bypass ? Mode::BypassDomain : Mode::Domain;
            e.domain = domain;
            r = reconcile_identity(space);
            if (r == ListenerResult::Ok && !bypass) r = replay(space, id, mappings);
        }
        // The contract: a failed attach leaves the endpoint blocked (what the replay added goes).
        if (r != ListenerResult::Ok) block(e, id);
        return r;
    });
}

ListenerResult DmaMapper::map(iommu::EndpointId id, const iommu::Mapping& mapping) {
    return with_endpoint(id, true, [&](Endpoint&, Space& space) {
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
        HostMapping host{mapping, fragments_for(mapping), {id}};
        ListenerResult r = map_fragments(space, host.fragments, mapping.flags & iommu::kMapRead,
                                         mapping.flags & iommu::kMapWrite, "MAP");
        if (r == ListenerResult::Ok) space.mappings.emplace(mapping.first.value, std::move(host));
        return r;
    });
}

ListenerResult DmaMapper::unmap(iommu::EndpointId id, const iommu::Mapping& mapping) {
    return with_endpoint(id, true, [&](Endpoint&, Space& space) {
        auto it = space.mappings.find(mapping.first.value);
        if (it == space.mappings.end() || !(it->second.mapping == mapping)) return ListenerResult::Failed;
        auto& holders = it->second.holders;
        auto holder = std::find(holders.begin(), holders.end(), id);
        if (holder == holders.end()) return ListenerResult::Failed;
        holders.erase(holder);
        if (!holders.empty()) return ListenerResult::Ok;
        const std::vector<Fragment> fragments = std::move(it->second.fragments);
        space.mappings.erase(it);
        return drop(space, fragments) ? ListenerResult::Ok : ListenerResult::Failed;
    });
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
                      ", host failures %" PRIu64 ", rebuilds %" PRIu64 ", lost %" PRIu64 ", stale %" PRIu64 "\n",
                      s.name.c_str(),
                      s.identity ? "identity" : (s.domain ? ("domain " + std::to_string(*s.domain)).c_str() : "empty"),
                      s.guest_mappings, s.host_mappings, s.entry_limit, s.pinned_bytes >> 10, s.host_maps,
                      s.host_unmaps, s.shared_hits, s.budget_refusals, s.host_failures, s.rebuilds, s.lost_mappings,
                      s.stale);
        text += line;
    }
    return text;
}

}  // namespace devices::vfio
