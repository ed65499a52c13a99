// iommu::Iommu requests and lifecycle: ATTACH/DETACH/MAP/UNMAP/PROBE semantics of virtio 1.2
// 5.13.6.3-5.13.6.8, domain lifetime (5.13.6.4), bypass (5.13.6.2) and listener fan-out with
// rollback. Translation and observability live in iommu_translate.cpp and iommu_stats.cpp.
#include "iommu/iommu.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <string>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace iommu {
namespace {

std::size_t index(Status status) { return static_cast<std::size_t>(status); }

void validate_regions(const EndpointConfig& config, const Limits& limits) {
    const std::string who = "iommu endpoint " + std::to_string(config.id);
    if (config.reserved.size() > limits.max_reserved_regions)
        throw vmm::SetupError(who + ": more than " + std::to_string(limits.max_reserved_regions) + " reserved regions");
    std::vector<ResvRegion> sorted = config.reserved;
    std::sort(sorted.begin(), sorted.end(), [](const ResvRegion& a, const ResvRegion& b) { return a.first < b.first; });
    int msi_regions = 0;
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        const ResvRegion& r = sorted[i];
        if (r.first > r.last)
            throw vmm::SetupError(who + ": reserved region " + vmm::hex(r.first.value) + " ends before it starts");
        if (r.kind != ResvKind::Reserved && r.kind != ResvKind::Msi)
            throw vmm::SetupError(who + ": unknown reserved region kind");
        // CONFORMANCE.md D51: no overlapping RESV_MEM regions for one endpoint. D50: at most one
        // MSI region.
        if (i > 0 && sorted[i - 1].last >= r.first)
            throw vmm::SetupError(who + ": reserved regions overlap at " + vmm::hex(r.first.value));
        if (r.kind == ResvKind::Msi && ++msi_regions > 1) throw vmm::SetupError(who + ": more than one MSI region");
    }
}

}  // namespace

Iommu::Iommu(Limits limits, const vmm::GuestMemory* ram) : limits_(limits), ram_(ram) {}

unsigned Iommu::table_output_bits() const {
    std::uint64_t last = 0;
    if (ram_)
        for (const vmm::GuestMemory::Region& region : ram_->regions()) last = std::max(last, region.range.last());
    return ips_bits_covering(last);
}

// ---- VMM side ------------------------------------------------------------------------------------

void Iommu::add_endpoint(EndpointConfig config) {
    validate_regions(config, limits_);
    std::unique_lock lock(lock_);
    if (endpoints_.count(config.id))
        throw vmm::SetupError("iommu endpoint " + std::to_string(config.id) + " is registered twice");
    // Put the external IOMMU in the state of an unattached endpoint before the guest can see it.
    if (config.listener && config.listener->detach(config.id, unattached_bypass_) != ListenerResult::Ok)
        throw vmm::SetupError("iommu endpoint " + std::to_string(config.id) +
                              ": the external IOMMU refused the initial (unattached) state");
    auto [it, inserted] = endpoints_.try_emplace(config.id);
    it->second.config = std::move(config);
}

bool Iommu::has_endpoint(EndpointId id) const {
    std::shared_lock lock(lock_);
    return endpoints_.count(id) != 0;
}

void Iommu::set_fault_sink(FaultSink* sink) {
    std::lock_guard guard(sink_lock_);
    sink_ = sink;
}

void Iommu::set_geometry(const Geometry& geometry) {
    std::unique_lock lock(lock_);
    geometry_ = geometry;
    // An empty mask has no granule; keep the model sane (byte-granular) even then.
    if (geometry_.window.page_size_mask == 0) geometry_.window.page_size_mask = 1;
}

// ---- helpers -------------------------------------------------------------------------------------

Status Iommu::check_domain_id(DomainId domain) const {
    // A domain outside domain_range is out of range (5.13.4).
    if (domain < geometry_.domain_first || domain > geometry_.domain_last) return Status::Range;
    return Status::Ok;
}

Iommu::DomainState* Iommu::find_domain(DomainId id) {
    auto it = domains_.find(id);
    return it == domains_.end() ? nullptr : it->second.get();
}

Status Iommu::listener_status(ListenerResult result) {
    if (result == ListenerResult::Ok) return Status::Ok;
    ++listener_failures_;
    switch (result) {
        case ListenerResult::NoMemory: return Status::NoMem;
        case ListenerResult::Invalid: return Status::Inval;
        default: return Status::DevErr;
    }
}

namespace {

// A domain's mappings as attach() sees them (none for an endpoint joining a new domain).
class DomainMappings final : public MappingSource {
public:
    explicit DomainMappings(const Domain* domain) : domain_(domain) {}
    std::size_t size() const override { return domain_ ? domain_->mapping_count() : 0; }
    bool all_of(const std::function<bool(const Mapping&)>& fn) const override {
        return !domain_ || domain_->all_of(fn);
    }

private:
    const Domain* domain_;
};

}  // namespace

Status Iommu::move_listener(Endpoint& endpoint, DomainState* to, DomainId to_id, bool to_bypass) {
    MapListener* listener = endpoint.config.listener.get();
    if (!listener) return Status::Ok;
    const EndpointId id = endpoint.config.id;
    // Implicit detach first (CONFORMANCE.md D20: exactly like DETACH then ATTACH), into the blocked state: the
    // guest cannot observe the endpoint between the two steps, so nothing is mapped for it.
    if (endpoint.domain) {
        if (Status status = listener_status(listener->detach(id, false)); status != Status::Ok) return status;
    }
    // The listener replays the domain's mappings (a VFIO container, devices/vfio/dma_mapper.hpp) and sees them all
    // first.
    return listener_status(listener->attach(id, to_id, to_bypass, DomainMappings(to ? &to->domain : nullptr)));
}

void Iommu::block_listener(Endpoint& endpoint) {
    MapListener* listener = endpoint.config.listener.get();
    if (!listener) return;
    const EndpointId id = endpoint.config.id;
    endpoint.blocked = true;
    // The listener contract's fallback maps nothing; retry once, then report the host stale.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (listener->detach(id, false) == ListenerResult::Ok) return;
        ++listener_failures_;
    }
    ++forced_detach_failures_;
    vmm::log_error("iommu: endpoint %u: external IOMMU failed to block it; it may keep stale mappings", id);
}

void Iommu::quarantine(Endpoint& endpoint) {
    ++blocked_endpoints_;
    std::uint64_t dropped = 0;
    if (log_.allow(&dropped))
        vmm::log_warn(
            "iommu: endpoint %u: its external IOMMU could not follow; the endpoint is detached and its DMA "
            "blocked until the guest attaches it again (%llu similar messages suppressed)",
            endpoint.config.id, static_cast<unsigned long long>(dropped));
    leave_domain(endpoint);
    block_listener(endpoint);
}

void Iommu::settle_unattached(Endpoint& endpoint) {
    MapListener* listener = endpoint.config.listener.get();
    if (!listener) return;
    if (listener->detach(endpoint.config.id, unattached_bypass_) == ListenerResult::Ok) {
        endpoint.blocked = false;
        return;
    }
    ++listener_failures_;
    ++blocked_endpoints_;
    block_listener(endpoint);
}

void Iommu::leave_domain(Endpoint& endpoint) {
    DomainState* state = endpoint.domain;
    if (!state) return;
    endpoint.domain = nullptr;
    endpoint.maps += state->maps - endpoint.joined_maps;
    endpoint.unmaps += state->unmaps - endpoint.joined_unmaps;
    state->domain.remove_member(endpoint.config.id);
    if (state->domain.members().empty()) {
        // CONFORMANCE.md D28: the domain dies with its mappings when its last endpoint leaves.
        live_mappings_ -= state->domain.mapping_count();
        domains_.erase(state->domain.id());
        return;
    }
    if (state->table && state->domain.listener_members().empty()) shadow_forget(*state);
    state->reserved.clear();
    for (const Domain::Member& member : state->domain.members()) {
        const auto& regions = endpoints_.at(member.endpoint).config.reserved;
        state->reserved.insert(state->reserved.end(), regions.begin(), regions.end());
    }
}

// ---- requests ------------------------------------------------------------------------------------

Status Iommu::count_attach(Endpoint& endpoint, Status status) {
    ++endpoint.statuses[index(status)];
    if (status == Status::Ok) ++endpoint.attaches;
    return status;
}

bool Iommu::room_for_domain(const Endpoint& endpoint) const {
    // Its own domain dies if the endpoint is its last member.
    const bool frees_one = endpoint.domain && endpoint.domain->domain.members().size() == 1;
    return domains_.size() - (frees_one ? 1 : 0) < limits_.max_domains;
}

Status Iommu::attach_locked(EndpointId endpoint_id, DomainId domain_id, std::uint32_t flags) {
    auto it = endpoints_.find(endpoint_id);
    if (it == endpoints_.end()) return Status::NoEnt;  // CONFORMANCE.md D17
    Endpoint& endpoint = it->second;
    auto finish = [&](Status status) { return count_attach(endpoint, status); };
    if (flags & ~geometry_.attach_flags) return finish(Status::Inval);  // CONFORMANCE.md D16
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return finish(status);
    const bool bypass = (flags & VIRTIO_IOMMU_ATTACH_F_BYPASS) != 0;

    DomainState* to = find_domain(domain_id);
    if (to) {
        if (to->domain.is_bypass() != bypass) return finish(Status::Inval);  // CONFORMANCE.md D19
        if (to == endpoint.domain) return finish(Status::Ok);                // already there
        // CONFORMANCE.md D21: the endpoint's reserved regions must be compatible with the domain:
        // no existing mapping may cover them, or the endpoint would reach what it must not.
        for (const ResvRegion& region : endpoint.config.reserved)
            if (to->domain.overlaps(region.first.value, region.last.value)) return finish(Status::Unsupp);
    } else if (!room_for_domain(endpoint)) {
        return finish(Status::NoMem);
    }

    if (Status status = move_listener(endpoint, to, domain_id, bypass); status != Status::Ok) {
        // Moving cannot be done: the endpoint ends blocked, out of its old domain (which dies if
        // it was the last member), never back in it with host state the model might drop.
        quarantine(endpoint);
        return finish(status);
    }

    // CONFORMANCE.md D23: a domain that does not exist yet is created (in MAP mode).
    join(endpoint, to, to ? nullptr : std::make_unique<DomainState>(domain_id, bypass));
    // CONFORMANCE.md D71: an external endpoint joining a table-mode domain gets its table shadowed.
    return finish(endpoint.domain->table ? shadow_joined(endpoint) : Status::Ok);
}

void Iommu::join(Endpoint& endpoint, DomainState* to, std::unique_ptr<DomainState> created) {
    leave_domain(endpoint);  // CONFORMANCE.md D20 implicit detach; `to` survives (it is another domain)
    if (!to) {
        to = created.get();
        const DomainId id = to->domain.id();
        domains_.emplace(id, std::move(created));
    }
    to->domain.add_member(endpoint.config.id, endpoint.config.listener.get());
    to->reserved.insert(to->reserved.end(), endpoint.config.reserved.begin(), endpoint.config.reserved.end());
    endpoint.domain = to;
    endpoint.blocked = false;
    endpoint.joined_maps = to->maps;
    endpoint.joined_unmaps = to->unmaps;
}

Status Iommu::attach_table_locked(EndpointId endpoint_id, DomainId domain_id, const TableDescriptor& table) {
    auto it = endpoints_.find(endpoint_id);
    if (it == endpoints_.end()) return Status::NoEnt;  // CONFORMANCE.md D62
    Endpoint& endpoint = it->second;
    auto finish = [&](Status status) { return count_attach(endpoint, status); };
    if (!ram_) return finish(Status::Unsupp);
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return finish(status);
    DomainState* to = find_domain(domain_id);
    if (to) {
        // CONFORMANCE.md D64: one mode per domain, one table per table-mode domain.
        if (!to->table || !to->table->descriptor.same_table(table)) return finish(Status::Inval);
        if (to == endpoint.domain) return finish(Status::Ok);
    } else if (!room_for_domain(endpoint)) {
        return finish(Status::NoMem);
    }
    if (Status status = move_listener(endpoint, to, domain_id, false); status != Status::Ok) {
        quarantine(endpoint);  // as in attach_locked: blocked, never back in its old domain
        return finish(status);
    }
    std::unique_ptr<DomainState> created;
    if (!to) {
        created = std::make_unique<DomainState>(domain_id, false);
        created->table = std::make_unique<TableState>(table, limits_.iotlb_capacity);
    }
    join(endpoint, to, std::move(created));
    return finish(shadow_joined(endpoint));  // CONFORMANCE.md D71
}

Status Iommu::invalidate_locked(DomainId domain_id, const Invalidation& what) {
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return status;
    DomainState* state = find_domain(domain_id);
    if (!state) return Status::NoEnt;  // CONFORMANCE.md D66
    auto finish = [&](Status status) {
        ++state->statuses[index(status)];
        return status;
    };
    if (!state->table) return finish(Status::Inval);  // CONFORMANCE.md D66: a MAP-mode domain
    // No translation is in flight (the lock is exclusive): once this returns, none uses a dropped
    // entry (CONFORMANCE.md D67).
    TableState& table = *state->table;
    const bool asid_matches = what.asid == table.descriptor.asid;
    switch (what.scope) {
        case InvalidateScope::Domain: table.iotlb.invalidate_domain(); break;
        case InvalidateScope::Asid: table.iotlb.invalidate_asid(asid_matches); break;
        case InvalidateScope::Range:
            table.iotlb.invalidate_range(what.first, what.last, what.asid.has_value(), asid_matches);
            break;
    }
    if (state->domain.listener_members().empty()) return finish(Status::Ok);
    // CONFORMANCE.md D72: the host follows the table over the range, or over the whole domain for
    // the other scopes (whatever the ASID: a re-walk can only bring the host closer to the table).
    refused_run_.reset();
    std::vector<EndpointId> stale;
    const bool range = what.scope == InvalidateScope::Range;
    const Status status =
        finish(shadow_sync(*state, range ? what.first : 0, range ? what.last : ~std::uint64_t{0}, stale));
    quarantine_all(stale);  // may end the domain
    return status;
}

Status Iommu::detach_locked(EndpointId endpoint_id, DomainId domain_id) {
    auto it = endpoints_.find(endpoint_id);
    if (it == endpoints_.end()) return Status::NoEnt;  // CONFORMANCE.md D25
    Endpoint& endpoint = it->second;
    auto finish = [&](Status status) {
        ++endpoint.statuses[index(status)];
        if (status == Status::Ok) ++endpoint.detaches;
        return status;
    };
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return finish(status);
    // CONFORMANCE.md D26: unknown domain, or endpoint not in it.
    if (!endpoint.domain || endpoint.domain->domain.id() != domain_id) return finish(Status::Inval);
    if (MapListener* listener = endpoint.config.listener.get()) {
        Status status = listener_status(listener->detach(endpoint_id, unattached_bypass_));
        if (status != Status::Ok) {
            // E.g. bypass needs guest RAM mapped and it does not fit: detached, but blocked.
            quarantine(endpoint);
            return finish(status);
        }
    }
    leave_domain(endpoint);  // CONFORMANCE.md D27, D28
    return finish(Status::Ok);
}

Status Iommu::map_locked(DomainId domain_id, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
                         std::uint32_t flags) {
    DomainState* state = find_domain(domain_id);
    map_refused_for_.reset();
    auto finish = [&](Status status) {
        if (!state) return status;
        ++state->statuses[index(status)];
        if (status != Status::Ok && !map_refused_for_) {
            const auto& members =
                state->domain.listener_members().empty() ? state->domain.members() : state->domain.listener_members();
            if (!members.empty()) map_refused_for_ = members.front().endpoint;
        }
        return status;
    };
    // CONFORMANCE.md D31 (and D35: MMIO only with F_MMIO, which the geometry's flag mask encodes).
    if (flags & ~geometry_.map_flags) return finish(Status::Inval);
    // virt_end must be strictly greater than virt_start (the driver's rule, virtio 1.2 5.13.6.5.1).
    if (virt_end <= virt_start) return finish(Status::Inval);
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return finish(status);
    if (virt_start < geometry_.window.input_first || virt_end > geometry_.window.input_last)
        return finish(Status::Range);
    // CONFORMANCE.md D29: virt_start, phys_start and virt_end + 1 aligned to the granule (virt_end
    // + 1 may wrap to 0 for a mapping that ends at 2^64 - 1, which is aligned).
    const std::uint64_t granule_mask = geometry_.window.granule() - 1;
    if ((virt_start | phys_start | (virt_end + 1)) & granule_mask) return finish(Status::Range);
    // The physical range must not wrap past 2^64.
    if (!vmm::checked_add(phys_start, virt_end - virt_start)) return finish(Status::Range);
    if (!state) return Status::NoEnt;                             // CONFORMANCE.md D32
    if (state->domain.is_bypass()) return finish(Status::Inval);  // CONFORMANCE.md D33
    if (state->table) return finish(Status::Inval);               // CONFORMANCE.md D65
    for (const ResvRegion& region : state->reserved)              // CONFORMANCE.md D52
        if (region.overlaps(virt_start, virt_end)) return finish(Status::Inval);
    if (state->domain.mapping_count() >= limits_.max_mappings_per_domain || live_mappings_ >= limits_.max_mappings)
        return finish(state->domain.overlaps(virt_start, virt_end) ? Status::Inval : Status::NoMem);

    const Mapping mapping{vmm::Iova{virt_start}, vmm::Iova{virt_end}, vmm::GuestPhysAddr{phys_start}, flags};
    // Insert first (one tree walk that also checks overlap, CONFORMANCE.md D30); no translation can
    // see it before the lock is released, so undoing it on a listener failure is invisible.
    if (!state->domain.insert_if_free(mapping)) return finish(Status::Inval);
    std::vector<EndpointId> stale;
    if (Status status = map_on_listeners(*state, mapping, stale); status != Status::Ok) {
        state->domain.erase(mapping);
        finish(status);
        quarantine_all(stale);  // may end the domain
        return status;
    }
    ++live_mappings_;
    ++state->maps;
    ++total_maps_;
    return finish(Status::Ok);
}

Status Iommu::map_on_listeners(DomainState& state, const Mapping& mapping, std::vector<EndpointId>& stale) {
    const auto& members = state.domain.listener_members();
    for (std::size_t i = 0; i < members.size(); ++i) {
        Status status = listener_status(members[i].listener->map(members[i].endpoint, mapping));
        if (status == Status::Ok) continue;
        map_refused_for_ = members[i].endpoint;
        for (std::size_t j = 0; j < i; ++j)  // undo on the endpoints already updated
            if (members[j].listener->unmap(members[j].endpoint, mapping) != ListenerResult::Ok)
                stale.push_back(members[j].endpoint);
        return status;
    }
    return Status::Ok;
}

Status Iommu::unmap_locked(DomainId domain_id, std::uint64_t virt_start, std::uint64_t virt_end) {
    DomainState* state = find_domain(domain_id);
    auto finish = [&](Status status) {
        if (state) ++state->statuses[index(status)];
        return status;
    };
    if (virt_end < virt_start) return finish(Status::Inval);
    if (Status status = check_domain_id(domain_id); status != Status::Ok) return finish(status);
    if (virt_start < geometry_.window.input_first || virt_end > geometry_.window.input_last)
        return finish(Status::Range);
    if (!state) return Status::NoEnt;                             // CONFORMANCE.md D37
    if (state->domain.is_bypass()) return finish(Status::Inval);  // CONFORMANCE.md D38
    if (state->table) return finish(Status::Inval);               // CONFORMANCE.md D65
    scratch_.clear();
    // CONFORMANCE.md D39: the whole range is checked before anything is removed; D40: unmapped
    // parts are fine.
    if (Status status = state->domain.remove_range(virt_start, virt_end, scratch_); status != Status::Ok)
        return finish(status);

    const auto& members = state->domain.listener_members();
    for (std::size_t i = 0; i < members.size(); ++i) {
        for (std::size_t k = 0; k < scratch_.size(); ++k) {
            Status status = listener_status(members[i].listener->unmap(members[i].endpoint, scratch_[k]));
            if (status == Status::Ok) continue;
            // Undo: put back what this endpoint and the ones before it already removed, and the
            // domain's own copy.
            // An endpoint whose undo fails lacks mappings the model has: it is blocked rather
            // than left to fail every later UNMAP of them.
            std::vector<EndpointId> stale;
            auto remap = [&](const Domain::Member& member, std::size_t count) {
                for (std::size_t m = 0; m < count; ++m)
                    if (member.listener->map(member.endpoint, scratch_[m]) != ListenerResult::Ok) {
                        stale.push_back(member.endpoint);
                        return;
                    }
            };
            remap(members[i], k);
            for (std::size_t j = 0; j < i; ++j) remap(members[j], scratch_.size());
            for (const Mapping& mapping : scratch_) state->domain.insert(mapping);
            finish(status);
            quarantine_all(stale);  // may end the domain
            return status;
        }
    }
    live_mappings_ -= scratch_.size();
    state->unmaps += scratch_.size();
    total_unmaps_ += scratch_.size();
    return finish(Status::Ok);
}

Status Iommu::Batch::attach(EndpointId endpoint, DomainId domain, std::uint32_t flags) {
    return iommu_.attach_locked(endpoint, domain, flags);
}
Status Iommu::Batch::detach(EndpointId endpoint, DomainId domain) { return iommu_.detach_locked(endpoint, domain); }
Status Iommu::Batch::map(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
                         std::uint32_t flags) {
    return iommu_.map_locked(domain, virt_start, virt_end, phys_start, flags);
}
Status Iommu::Batch::unmap(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end) {
    return iommu_.unmap_locked(domain, virt_start, virt_end);
}

Status Iommu::Batch::attach_table(EndpointId endpoint, DomainId domain, const TableDescriptor& table) {
    return iommu_.attach_table_locked(endpoint, domain, table);
}
Status Iommu::Batch::invalidate(DomainId domain, const Invalidation& what) {
    return iommu_.invalidate_locked(domain, what);
}
bool Iommu::Batch::can_use_tables(EndpointId endpoint) const {
    return iommu_.ram_ && iommu_.endpoints_.count(endpoint) != 0;
}

bool Iommu::Batch::shadows_tables(EndpointId endpoint) const {
    auto it = iommu_.endpoints_.find(endpoint);
    return iommu_.ram_ && it != iommu_.endpoints_.end() && it->second.config.listener;
}

const std::vector<ResvRegion>* Iommu::Batch::probe(EndpointId endpoint_id) {
    auto it = iommu_.endpoints_.find(endpoint_id);
    if (it == iommu_.endpoints_.end()) return nullptr;  // CONFORMANCE.md D42
    ++it->second.probes;
    return &it->second.config.reserved;
}

void Iommu::quarantine_all(const std::vector<EndpointId>& ids) {
    for (EndpointId id : ids) {
        ++rollback_failures_;
        auto it = endpoints_.find(id);
        if (it != endpoints_.end() && it->second.domain) quarantine(it->second);
    }
}

void Iommu::Batch::count_endpoint_status(EndpointId endpoint_id, Status status) {
    auto it = iommu_.endpoints_.find(endpoint_id);
    if (it != iommu_.endpoints_.end()) ++it->second.statuses[index(status)];
}

// ---- bypass and reset ----------------------------------------------------------------------------

bool Iommu::set_unattached_bypass(bool bypass) {
    std::unique_lock lock(lock_);
    if (bypass == unattached_bypass_) return true;
    unattached_bypass_ = bypass;
    bool all_followed = true;
    for (auto& [id, endpoint] : endpoints_) {
        if (!endpoint.config.listener || endpoint.domain) continue;
        const bool was_blocked = endpoint.blocked;
        settle_unattached(endpoint);
        if (endpoint.blocked && !was_blocked) {
            all_followed = false;
            if (log_.allow())
                vmm::log_warn("iommu: endpoint %u: external IOMMU refused bypass=%d; the endpoint stays blocked", id,
                              bypass);
        }
    }
    return all_followed;
}

bool Iommu::unattached_bypass() const {
    std::shared_lock lock(lock_);
    return unattached_bypass_;
}

void Iommu::reset() {
    std::unique_lock lock(lock_);
    for (auto& [id, endpoint] : endpoints_) {
        if (!endpoint.domain && !endpoint.blocked) continue;
        if (endpoint.domain) {
            endpoint.maps += endpoint.domain->maps - endpoint.joined_maps;
            endpoint.unmaps += endpoint.domain->unmaps - endpoint.joined_unmaps;
            endpoint.domain = nullptr;
        }
        // The unattached mode, or blocked if the external IOMMU cannot provide it (e.g. bypass
        // needs guest RAM pinned beyond RLIMIT_MEMLOCK): never the old domain's state.
        settle_unattached(endpoint);
    }
    domains_.clear();
    live_mappings_ = 0;
}

}  // namespace iommu
