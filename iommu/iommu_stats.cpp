// iommu::Iommu observability: counters per endpoint and per domain, and a mapping dump, for the
// VMM to expose (e.g. on a debug socket or at exit).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <shared_mutex>

#include "iommu/iommu.hpp"
#include "vmm/base/log.hpp"

namespace iommu {
namespace {

void append_statuses(std::string& out, const StatusCounts& counts) {
    for (std::size_t i = 0; i < counts.size(); ++i)
        if (counts[i]) vmm::append_format(out, " %s=%" PRIu64, status_name(static_cast<Status>(i)), counts[i]);
}

}  // namespace

DomainStats Iommu::make_domain_stats(const DomainState& state) {
    DomainStats stats;
    stats.id = state.domain.id();
    stats.bypass = state.domain.is_bypass();
    if (state.table) {
        stats.table = true;
        stats.asid = state.table->descriptor.asid;
        stats.iotlb = state.table->iotlb.stats();
        stats.shadowed = !state.domain.listener_members().empty();
        stats.shadow = state.table->shadow;
        stats.shadow.runs = state.domain.mapping_count();
    }
    for (const Domain::Member& member : state.domain.members()) stats.endpoints.push_back(member.endpoint);
    stats.maps = state.maps;
    stats.unmaps = state.unmaps;
    stats.faults = state.faults.load(std::memory_order_relaxed);
    stats.live_mappings = state.domain.mapping_count();
    stats.statuses = state.statuses;
    return stats;
}

IommuStats Iommu::stats() const {
    std::shared_lock lock(lock_);
    IommuStats stats;
    stats.endpoints = endpoints_.size();
    stats.domains = domains_.size();
    stats.live_mappings = live_mappings_;
    stats.maps = total_maps_;
    stats.unmaps = total_unmaps_;
    stats.faults = faults_.load(std::memory_order_relaxed);
    stats.faults_undelivered = faults_undelivered_.load(std::memory_order_relaxed);
    stats.listener_failures = listener_failures_;
    stats.rollback_failures = rollback_failures_;
    stats.forced_detach_failures = forced_detach_failures_;
    stats.blocked_endpoints = blocked_endpoints_;
    stats.unattached_bypass = unattached_bypass_;
    return stats;
}

std::optional<EndpointStats> Iommu::endpoint_stats(EndpointId id) const {
    std::shared_lock lock(lock_);
    auto it = endpoints_.find(id);
    if (it == endpoints_.end()) return std::nullopt;
    const Endpoint& endpoint = it->second;
    EndpointStats stats;
    stats.id = id;
    stats.maps = endpoint.maps;
    stats.unmaps = endpoint.unmaps;
    if (endpoint.domain) {
        stats.domain = endpoint.domain->domain.id();
        stats.maps += endpoint.domain->maps - endpoint.joined_maps;
        stats.unmaps += endpoint.domain->unmaps - endpoint.joined_unmaps;
        stats.live_mappings = endpoint.domain->domain.mapping_count();
    }
    stats.has_listener = endpoint.config.listener != nullptr;
    stats.blocked = endpoint.blocked;
    stats.attaches = endpoint.attaches;
    stats.detaches = endpoint.detaches;
    stats.probes = endpoint.probes;
    stats.faults = endpoint.faults.load(std::memory_order_relaxed);
    stats.translations = endpoint.translations.load(std::memory_order_relaxed);
    stats.statuses = endpoint.statuses;
    return stats;
}

std::optional<DomainStats> Iommu::domain_stats(DomainId id) const {
    std::shared_lock lock(lock_);
    auto it = domains_.find(id);
    if (it == domains_.end()) return std::nullopt;
    return make_domain_stats(*it->second);
}

std::vector<DomainStats> Iommu::all_domain_stats() const {
    std::shared_lock lock(lock_);
    std::vector<DomainStats> all;
    for (const auto& [id, state] : domains_) all.push_back(make_domain_stats(*state));
    return all;
}

std::optional<std::vector<Mapping>> Iommu::mappings(DomainId id) const {
    std::shared_lock lock(lock_);
    auto it = domains_.find(id);
    if (it == domains_.end()) return std::nullopt;
    return it->second->domain.mappings();
}

std::string Iommu::dump(std::size_t max_mappings_per_domain) const {
    std::shared_lock lock(lock_);
    std::string out;
    vmm::append_format(out, "iommu: %zu endpoints, %zu domains, %zu mappings, unattached %s\n", endpoints_.size(),
                       domains_.size(), live_mappings_, unattached_bypass_ ? "bypass" : "blocked");
    // Sorted by ID so that two dumps compare line by line.
    std::vector<EndpointId> endpoint_ids;
    for (const auto& [id, endpoint] : endpoints_) endpoint_ids.push_back(id);
    std::sort(endpoint_ids.begin(), endpoint_ids.end());
    for (EndpointId id : endpoint_ids) {
        const Endpoint& endpoint = endpoints_.at(id);
        vmm::append_format(out, "endpoint %u: %s", id, endpoint.config.listener ? "external" : "emulated");
        if (endpoint.domain) vmm::append_format(out, " domain %u", endpoint.domain->domain.id());
        else
            vmm::append_format(
                out, endpoint.blocked ? " unattached (blocked: its host IOMMU could not follow)" : " unattached");
        vmm::append_format(out, " attaches=%" PRIu64 " detaches=%" PRIu64 " probes=%" PRIu64 " faults=%" PRIu64,
                           endpoint.attaches, endpoint.detaches, endpoint.probes,
                           endpoint.faults.load(std::memory_order_relaxed));
        append_statuses(out, endpoint.statuses);
        out += '\n';
        for (const ResvRegion& region : endpoint.config.reserved)
            vmm::append_format(out, "  resv %s [%#" PRIx64 ", %#" PRIx64 "]\n",
                               region.kind == ResvKind::Msi ? "msi" : "reserved", region.first.value,
                               region.last.value);
    }
    std::vector<DomainId> domain_ids;
    for (const auto& [id, state] : domains_) domain_ids.push_back(id);
    std::sort(domain_ids.begin(), domain_ids.end());
    for (DomainId id : domain_ids) {
        const DomainState* state = domains_.at(id).get();
        const Domain& domain = state->domain;
        if (const TableState* table = state->table.get()) {
            const TableDescriptor& t = table->descriptor;
            const IotlbStats iotlb = table->iotlb.stats();
            vmm::append_format(out,
                               "domain %u (table): asid=%u tcr=%#" PRIx64 " ttbr=%#" PRIx64 " walks=%" PRIu64
                               " walk_faults=%" PRIu64 " iotlb_entries=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64
                               " invalidations=%" PRIu64 " faults=%" PRIu64,
                               id, t.asid, t.tcr, t.ttbr, iotlb.walks, iotlb.walk_faults, iotlb.entries, iotlb.hits,
                               iotlb.misses,
                               iotlb.invalidations_domain + iotlb.invalidations_asid + iotlb.invalidations_range,
                               state->faults.load(std::memory_order_relaxed));
            if (!domain.listener_members().empty()) {
                const ShadowStats& shadow = table->shadow;
                vmm::append_format(out,
                                   " shadow: host_runs=%zu host_kib=%" PRIu64 " run_maps=%" PRIu64
                                   " run_unmaps=%" PRIu64 " refusals=%" PRIu64 " rewalks=%" PRIu64
                                   " walk_reads=%" PRIu64 " walks_cut=%" PRIu64,
                                   domain.mapping_count(), shadow.bytes >> 10, shadow.run_maps, shadow.run_unmaps,
                                   shadow.refusals, shadow.rewalks, shadow.walk_reads, shadow.walks_cut);
            }
            append_statuses(out, state->statuses);
            out += '\n';
            continue;
        }
        vmm::append_format(out, "domain %u%s: %zu mappings maps=%" PRIu64 " unmaps=%" PRIu64 " faults=%" PRIu64, id,
                           domain.is_bypass() ? " (bypass)" : "", domain.mapping_count(), state->maps, state->unmaps,
                           state->faults.load(std::memory_order_relaxed));
        append_statuses(out, state->statuses);
        out += '\n';
        std::size_t listed = 0;
        domain.all_of([&](const Mapping& m) {
            if (listed++ == max_mappings_per_domain) {
                vmm::append_format(out, "  ... %zu more\n", domain.mapping_count() - max_mappings_per_domain);
                return false;
            }
            vmm::append_format(out, "  [%#" PRIx64 ", %#" PRIx64 "] -> %#" PRIx64 " %s%s%s\n", m.first.value,
                               m.last.value, m.gpa.value, (m.flags & kMapRead) ? "r" : "-",
                               (m.flags & kMapWrite) ? "w" : "-", (m.flags & kMapMmio) ? " mmio" : "");
            return true;
        });
    }
    return out;
}

}  // namespace iommu
