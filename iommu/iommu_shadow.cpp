// iommu::Iommu shadowing: a table-mode domain's leaves mirrored into the external IOMMUs
// (MapListener: VFIO type-1 containers) of its endpoints, which cannot read the guest's tables
// (iommu/page_tables.md, "Shadowed endpoints"). The domain's mappings are the runs the hosts
// hold: contiguous leaves with the same permissions, one host mapping each. Isolation first: a
// run is in the hosts only if the table allowed all of it as of the last INVALIDATE naming it.
#include <algorithm>

#include "iommu/iommu.hpp"
#include "vmm/base/log.hpp"

namespace iommu {
namespace {

std::uint64_t size_of(const Mapping& run) { return run.last.value - run.first.value + 1; }  // < 2^48

Mapping make_run(std::uint64_t first, std::uint64_t last, std::uint64_t gpa, std::uint32_t flags) {
    return Mapping{vmm::Iova{first}, vmm::Iova{last}, vmm::GuestPhysAddr{gpa}, flags};
}

// Appends [first, last] -> gpa, merged into the last run when it continues it.
void append_run(std::vector<Mapping>& runs, std::uint64_t first, std::uint64_t last, std::uint64_t gpa,
                std::uint32_t flags) {
    if (!runs.empty()) {
        Mapping& back = runs.back();
        if (back.flags == flags && back.last.value + 1 == first && back.gpa.value + size_of(back) == gpa) {
            back.last = vmm::Iova{last};
            return;
        }
    }
    runs.push_back(make_run(first, last, gpa, flags));
}

// Appends [first, last] -> gpa except what the reserved regions cover (never shadowed, as MAP
// refuses them: CONFORMANCE.md D52). A handful of regions per endpoint.
void append_outside_reserved(std::vector<Mapping>& runs, std::uint64_t first, std::uint64_t last, std::uint64_t gpa,
                             std::uint32_t flags, const std::vector<ResvRegion>& reserved) {
    std::uint64_t at = first;
    for (;;) {
        const ResvRegion* next = nullptr;
        for (const ResvRegion& region : reserved)
            if (region.overlaps(at, last) && (!next || region.first < next->first)) next = &region;
        if (!next) return append_run(runs, at, last, gpa + (at - first), flags);
        if (next->first.value > at) append_run(runs, at, next->first.value - 1, gpa + (at - first), flags);
        if (next->last.value >= last) return;
        at = next->last.value + 1;
    }
}

// Whether `allowed` (runs in IOVA order) translates all of [first, last] to gpa onwards with `flags`.
bool allows(const std::vector<Mapping>& allowed, std::uint64_t first, std::uint64_t last, std::uint64_t gpa,
            std::uint32_t flags) {
    auto it = std::lower_bound(allowed.begin(), allowed.end(), first,
                               [](const Mapping& run, std::uint64_t iova) { return run.last.value < iova; });
    for (std::uint64_t at = first; it != allowed.end() && it->first.value <= at; ++it) {
        if (it->flags != flags || it->gpa.value + (at - it->first.value) != gpa + (at - first)) return false;
        if (it->last.value >= last) return true;
        at = it->last.value + 1;
    }
    return false;
}

// Appends to `out` the parts of `allowed` that no run of `kept` covers (both in IOVA order).
void append_uncovered(const std::vector<Mapping>& allowed, const std::vector<Mapping>& kept,
                      std::vector<Mapping>& out) {
    auto k = kept.begin();
    for (const Mapping& run : allowed) {
        std::uint64_t at = run.first.value;
        while (k != kept.end() && k->last.value < at) ++k;
        for (auto cover = k; cover != kept.end() && cover->first.value <= run.last.value; ++cover) {
            if (cover->first.value > at)
                out.push_back(make_run(at, cover->first.value - 1, run.gpa.value + (at - run.first.value), run.flags));
            at = cover->last.value + 1;
        }
        if (at <= run.last.value)  // `at` only grows: past the run's end, nothing is left
            out.push_back(make_run(at, run.last.value, run.gpa.value + (at - run.first.value), run.flags));
    }
}

}  // namespace

Status Iommu::shadow_joined(Endpoint& endpoint) {
    DomainState& state = *endpoint.domain;
    // Later external endpoints had the domain's runs replayed by their listener (move_listener).
    if (!endpoint.config.listener || state.domain.listener_members().size() != 1) return Status::Ok;
    std::vector<EndpointId> stale;
    const Status status = shadow_sync(state, 0, ~std::uint64_t{0}, stale);
    // All or nothing, like the replay of a MAP-mode domain: blocked rather than half shadowed.
    if (status != Status::Ok || !stale.empty()) quarantine(endpoint);
    return status;
}

Status Iommu::shadow_sync(DomainState& state, std::uint64_t first, std::uint64_t last, std::vector<EndpointId>& stale) {
    TableState& table = *state.table;
    ShadowStats& shadow = table.shadow;
    ++shadow.rewalks;
    // What the table allows in [first, last] now, as runs.
    std::vector<Mapping> allowed;
    const LeafScan scan = scan_stage1(
        table.descriptor.stage1, *ram_, first, last, limits_.shadow_walk_reads, [&](const Stage1Leaf& leaf) {
            const std::uint64_t lo = std::max(leaf.iova_base, first);
            const std::uint64_t hi = std::min(leaf.iova_base + (leaf.size() - 1), last);
            const std::uint32_t flags = kMapRead | (leaf.writable ? kMapWrite : 0);
            append_outside_reserved(allowed, lo, hi, leaf.gpa_base + (lo - leaf.iova_base), flags, state.reserved);
        });
    shadow.walk_reads += scan.reads;
    Status status = Status::Ok;
    if (!scan.complete) {
        // Isolation first: what the walk did not reach counts as not allowed, so its runs go.
        ++shadow.walks_cut;
        status = Status::NoMem;
        std::uint64_t dropped = 0;
        if (shadow_log_.allow(&dropped))
            vmm::log_warn(
                "iommu: domain %u: walking its table for the host IOMMU took more than %llu descriptor reads; "
                "stopped at IOVA %#llx, the rest is unmapped and the request answered S_NOMEM (%llu similar "
                "messages suppressed)",
                state.domain.id(), static_cast<unsigned long long>(limits_.shadow_walk_reads),
                static_cast<unsigned long long>(scan.resume), static_cast<unsigned long long>(dropped));
    }

    // Runs that still match stay untouched (DMA through them goes on); the others go whole, since
    // a host entry cannot be split (VFIO type-1 refuses to unmap part of one), and their parts
    // outside the range come back as they were.
    std::vector<Mapping> kept, dropped_runs, added;
    for (const Mapping& run : state.domain.overlapping(first, last)) {
        const std::uint64_t lo = std::max(run.first.value, first), hi = std::min(run.last.value, last);
        if (allows(allowed, lo, hi, run.gpa.value + (lo - run.first.value), run.flags)) {
            kept.push_back(run);
            continue;
        }
        dropped_runs.push_back(run);
        if (run.first.value < first) added.push_back(make_run(run.first.value, first - 1, run.gpa.value, run.flags));
        if (run.last.value > last)
            added.push_back(
                make_run(last + 1, run.last.value, run.gpa.value + (last + 1 - run.first.value), run.flags));
    }
    append_uncovered(allowed, kept, added);

    for (const Mapping& run : dropped_runs) {
        for (const Domain::Member& member : state.domain.listener_members())
            if (listener_status(member.listener->unmap(member.endpoint, run)) != Status::Ok)
                stale.push_back(member.endpoint);
        state.domain.erase(run);
        --live_mappings_;
        shadow.bytes -= size_of(run);
        ++shadow.run_unmaps;
    }
    for (const Mapping& run : added) {
        map_refused_for_.reset();
        Status mapped = Status::NoMem;  // the model's own bounds (Limits) count as a refusal too
        if (state.domain.mapping_count() < limits_.max_mappings_per_domain && live_mappings_ < limits_.max_mappings)
            mapped = map_on_listeners(state, run, stale);
        if (mapped == Status::Ok) {
            state.domain.insert(run);
            ++live_mappings_;
            shadow.bytes += size_of(run);
            ++shadow.run_maps;
            continue;
        }
        // Left unmapped: the guest's DMA there faults in the host until an INVALIDATE maps it.
        ++shadow.refusals;
        if (status == Status::Ok) status = mapped;
        if (!refused_run_)
            refused_run_ = RefusedRun{map_refused_for_.value_or(state.domain.listener_members().front().endpoint), run};
    }
    return status;
}

void Iommu::shadow_forget(DomainState& state) {
    live_mappings_ -= state.domain.mapping_count();
    state.domain.clear();
    state.table->shadow.bytes = 0;
}

}  // namespace iommu
