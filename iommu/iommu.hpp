// iommu::Iommu: the IOMMU model behind a virtio-iommu device (virtio 1.2 section 5.13):
// endpoints registered by the VMM, domains created by ATTACH, mappings, bypass rules (5.13.6.3,
// 5.13.4), per-endpoint Translator views for emulated devices, and fan-out of every
// address-space change to external IOMMUs (MapListener) with rollback on failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "iommu/domain.hpp"
#include "iommu/iotlb.hpp"
#include "iommu/map_listener.hpp"
#include "iommu/stage1_walker.hpp"
#include "iommu/types.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/translator.hpp"

namespace iommu {

// Bounds on what a guest can make the VMM allocate. Exceeding one answers S_NOMEM.
struct Limits {
    std::size_t max_domains = 1024;
    std::size_t max_mappings_per_domain = std::size_t{1} << 18;
    std::size_t max_mappings = std::size_t{1} << 20;  // over all domains
    // Per endpoint; PROBE must fit them all in probe_size (24 bytes each).
    std::size_t max_reserved_regions = 16;
    // Entries of each table-mode domain's IOTLB.
    std::size_t iotlb_capacity = Iotlb::kDefaultCapacity;
    // Descriptor reads one request may spend walking a shadowed table (ATTACH of its first
    // external endpoint, INVALIDATE): past it the request answers S_NOMEM and what was not
    // walked is unmapped from the host (iommu/page_tables.md, "Shadowed endpoints").
    std::uint64_t shadow_walk_reads = std::uint64_t{1} << 18;
};

// A guest's stage-1 table as ATTACH_TABLE handed it over (iommu/page_tables.md), validated by
// protocol::parse_request. The raw values decide whether two ATTACH_TABLEs name the same table.
struct TableDescriptor {
    std::uint16_t format = 0;
    std::uint16_t asid = 0;
    std::uint64_t tcr = 0, ttbr = 0, mair = 0;
    Stage1Config stage1;  // what tcr and ttbr mean to the walker

    bool same_table(const TableDescriptor& other) const {
        return format == other.format && asid == other.asid && tcr == other.tcr && ttbr == other.ttbr &&
               mair == other.mair;
    }
};

// An INVALIDATE request, validated (page_tables.md, "INVALIDATE").
enum class InvalidateScope : std::uint8_t { Domain, Asid, Range };
struct Invalidation {
    InvalidateScope scope = InvalidateScope::Domain;
    std::optional<std::uint16_t> asid;  // given (F_ASID): required for Asid, optional for Range
    std::uint64_t first = 0, last = 0;  // Range: inclusive IOVA bounds
};

// What the device advertises and the driver negotiated; requests are checked against it.
struct Geometry {
    // The whole 64-bit input range unless the driver accepted F_INPUT_RANGE.
    IovaWindow window{.page_size_mask = ~std::uint64_t{0xfff}, .input_first = 0, .input_last = ~std::uint64_t{0}};
    std::uint32_t domain_first = 0;
    std::uint32_t domain_last = ~std::uint32_t{0};
    std::uint32_t map_flags = kMapRead | kMapWrite | kMapMmio;  // MMIO only with F_MMIO
    std::uint32_t attach_flags = VIRTIO_IOMMU_ATTACH_F_BYPASS;  // only with F_BYPASS_CONFIG
};

struct EndpointConfig {
    EndpointId id = 0;
    // Reported by PROBE as RESV_MEM properties. Must not overlap; at most one Msi region
    // (CONFORMANCE.md D50, D51).
    std::vector<ResvRegion> reserved;
    // External IOMMU that mirrors this endpoint's address space (VFIO). Null for an emulated
    // endpoint, whose DMA goes through translator(id).
    std::shared_ptr<MapListener> listener;
};

struct Fault {
    EndpointId endpoint = 0;
    FaultReason reason = FaultReason::Unknown;
    Access access = Access::Read;
    std::uint64_t address = 0;  // always valid (FAULT_F_ADDRESS)
    // A refused MAP reported as a fault: the refused mapping's kMapRead/kMapWrite, reported
    // as the record's READ/WRITE flags instead of `access`.
    std::optional<std::uint32_t> map_flags;
};

// A run of a shadowed table (iommu/page_tables.md, "Shadowed endpoints") that the host did not
// map, and the endpoint to report it for.
struct RefusedRun {
    EndpointId endpoint = 0;
    Mapping run;
};

// Receives translation faults of emulated endpoints (the virtio-iommu eventq). Called from the
// faulting device's thread with no Iommu lock held, so it may take its own locks.
class FaultSink {
public:
    virtual void report_fault(const Fault& fault) = 0;

protected:
    ~FaultSink() = default;
};

struct EndpointStats {
    EndpointId id = 0;
    std::optional<DomainId> domain;
    bool has_listener = false;
    bool blocked = false;  // unattached with DMA blocked, even if unattached endpoints bypass
    std::uint64_t attaches = 0, detaches = 0, probes = 0, faults = 0;
    std::uint64_t translations = 0;  // accesses translated (or refused) for the endpoint's device
    // Mappings created in / removed from the endpoint's address space while it was attached
    // (over all the domains it was in), and those it can reach now.
    std::uint64_t maps = 0, unmaps = 0, live_mappings = 0;
    StatusCounts statuses{};  // ATTACH/DETACH/PROBE results naming this endpoint
};

// A table-mode domain's shadow in its external IOMMUs (iommu/page_tables.md, "Shadowed
// endpoints"): host runs are the domain's mappings while it has endpoints with a listener.
struct ShadowStats {
    std::uint64_t runs = 0, bytes = 0;           // runs the domain keeps in its hosts now
    std::uint64_t run_maps = 0, run_unmaps = 0;  // runs mapped into / unmapped from the host
    std::uint64_t refusals = 0;                  // runs the host refused (left unmapped)
    std::uint64_t rewalks = 0, walk_reads = 0;   // table walks (ATTACH, INVALIDATE) and their reads
    std::uint64_t walks_cut = 0;                 // walks stopped by Limits::shadow_walk_reads
};

struct DomainStats {
    DomainId id = 0;
    bool bypass = false;
    bool table = false;  // table mode (ATTACH_TABLE); then `iotlb` and `asid` are set
    std::uint16_t asid = 0;
    IotlbStats iotlb;
    bool shadowed = false;  // table mode with external endpoints: then `shadow` is set
    ShadowStats shadow;
    std::vector<EndpointId> endpoints;
    std::uint64_t maps = 0, unmaps = 0, faults = 0, live_mappings = 0;
    StatusCounts statuses{};  // MAP/UNMAP/INVALIDATE results naming this domain
};

struct IommuStats {
    std::uint64_t endpoints = 0, domains = 0, live_mappings = 0;
    std::uint64_t maps = 0, unmaps = 0, faults = 0;
    std::uint64_t faults_undelivered = 0;  // no sink registered
    std::uint64_t listener_failures = 0;   // listener calls that failed (request rejected)
    std::uint64_t rollback_failures = 0;   // undo calls that failed (that endpoint was blocked)
    // Endpoints detached and blocked because their external IOMMU could not follow a change.
    std::uint64_t blocked_endpoints = 0;
    // Blocks that failed even when retried: that endpoint's host IOMMU may keep stale mappings.
    std::uint64_t forced_detach_failures = 0;
    bool unattached_bypass = false;
};

// Threads: requests, reset and setup come from one thread at a time (the virtio-iommu transport
// lock, or the VMM before the guest runs); translate() comes from any device thread. A
// shared_mutex guards all state: translations share it and hold it while the caller moves data
// (so an UNMAP or INVALIDATE completes only after accesses through the old translation are
// over); everything else takes it exclusively. Table-mode IOTLBs are filled by translations under
// the shared lock and have their own mutex (iotlb.hpp). The fault sink is called after the lock
// is released.
class Iommu : public std::enable_shared_from_this<Iommu> {
public:
    // `ram`: the guest RAM table-mode domains' tables live in (iommu/page_tables.md); it must
    // outlive the Iommu. Without it ATTACH_TABLE answers S_UNSUPP (the device does not offer it).
    explicit Iommu(Limits limits = {}, const vmm::GuestMemory* ram = nullptr);
    Iommu(const Iommu&) = delete;
    Iommu& operator=(const Iommu&) = delete;
    const Limits& limits() const { return limits_; }
    // Page-table handover: whether tables can be walked, and the output size PROBE announces (the
    // smallest IPS size that covers guest RAM).
    bool can_walk_tables() const { return ram_ != nullptr; }
    unsigned table_output_bits() const;

    // ---- VMM side
    // Throws vmm::SetupError for a duplicate id, malformed regions or a listener that refuses
    // its initial (unattached) state.
    void add_endpoint(EndpointConfig config);
    bool has_endpoint(EndpointId id) const;
    // The endpoint's view for DmaMemory. Requires the Iommu to be owned by a shared_ptr; the
    // view keeps it alive. Valid for any id; ids not registered (any more) fail every access.
    std::shared_ptr<const Translator> translator(EndpointId id) const;
    void set_fault_sink(FaultSink* sink);

    // ---- front end
    void set_geometry(const Geometry& geometry);

    // Requests, several under one exclusive lock (the front end takes a chunk of its ring at a
    // time, so a request does not pay for locking; translations wait for the chunk to end).
    class Batch {
    public:
        explicit Batch(Iommu& iommu) : iommu_(iommu), lock_(iommu.lock_) {}
        Status attach(EndpointId endpoint, DomainId domain, std::uint32_t flags);
        Status detach(EndpointId endpoint, DomainId domain);
        Status map(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
                   std::uint32_t flags);
        Status unmap(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end);
        // PROBE: the endpoint's reserved regions, or null for an unknown endpoint. Valid while the
        // batch lives.
        const std::vector<ResvRegion>* probe(EndpointId endpoint);
        // Page-table handover (iommu/page_tables.md). An endpoint whose DMA an external IOMMU
        // performs (a listener) has the table shadowed into it ("Shadowed endpoints").
        Status attach_table(EndpointId endpoint, DomainId domain, const TableDescriptor& table);
        Status invalidate(DomainId domain, const Invalidation& what);
        bool can_use_tables(EndpointId endpoint) const;
        bool shadows_tables(EndpointId endpoint) const;
        // After a MAP that was not Ok: the endpoint to report the refusal for (the one whose
        // external IOMMU refused it, else the domain's first); none if the domain does not exist.
        std::optional<EndpointId> refused_map_endpoint() const { return iommu_.map_refused_for_; }
        // After an INVALIDATE that was not Ok: the first host run an external IOMMU refused.
        const std::optional<RefusedRun>& refused_run() const { return iommu_.refused_run_; }
        void count_endpoint_status(EndpointId endpoint, Status status);

    private:
        Iommu& iommu_;
        std::unique_lock<std::shared_mutex> lock_;
    };
    // One-request batches.
    Status attach(EndpointId endpoint, DomainId domain, std::uint32_t flags) {
        return Batch(*this).attach(endpoint, domain, flags);
    }
    Status detach(EndpointId endpoint, DomainId domain) { return Batch(*this).detach(endpoint, domain); }
    Status map(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
               std::uint32_t flags) {
        return Batch(*this).map(domain, virt_start, virt_end, phys_start, flags);
    }
    Status unmap(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end) {
        return Batch(*this).unmap(domain, virt_start, virt_end);
    }

    // Whether unattached endpoints bypass (5.13.6.2: BYPASS_CONFIG offered and bypass = 1).
    // Listeners of unattached endpoints follow; one that cannot is blocked (false returned).
    bool set_unattached_bypass(bool bypass);
    bool unattached_bypass() const;
    // Device reset: every endpoint leaves its domain, all domains die (CONFORMANCE.md D14). Bypass
    // is kept.
    void reset();

    // Emulated endpoints' DMA (what translator(id) calls). See Translator::translate.
    bool translate(EndpointId endpoint, vmm::Iova iova, std::uint64_t length, Access access,
                   FragmentVisitor& visitor) const;

    // ---- observability
    IommuStats stats() const;
    std::optional<EndpointStats> endpoint_stats(EndpointId id) const;
    std::optional<DomainStats> domain_stats(DomainId id) const;
    std::vector<DomainStats> all_domain_stats() const;
    std::optional<std::vector<Mapping>> mappings(DomainId id) const;
    // Human-readable: every endpoint and domain with counters and mappings (at most
    // `max_mappings_per_domain` listed per domain).
    std::string dump(std::size_t max_mappings_per_domain = 64) const;

private:
    struct DomainState;
    struct Endpoint {
        EndpointConfig config;
        DomainState* domain = nullptr;
        // Unattached, and its external IOMMU blocked because it could not follow a change: DMA
        // fails even if unattached endpoints bypass, until it attaches or bypass changes.
        bool blocked = false;
        std::uint64_t attaches = 0, detaches = 0, probes = 0;
        // maps/unmaps of earlier domains, and the current domain's counts when it joined.
        std::uint64_t maps = 0, unmaps = 0, joined_maps = 0, joined_unmaps = 0;
        mutable std::atomic<std::uint64_t> faults{0};
        mutable std::atomic<std::uint64_t> translations{0};  // relaxed: a statistic (lkvm stat)
        StatusCounts statuses{};
    };
    // A table-mode domain's table and what was walked through it.
    struct TableState {
        TableState(const TableDescriptor& table, std::size_t capacity)
            : descriptor(table), iotlb(table.stage1.granule_shift, capacity) {}
        TableDescriptor descriptor;
        mutable Iotlb iotlb;  // filled by translations (own lock)
        ShadowStats shadow;   // runs and bytes: the domain's mappings (see iommu_shadow.cpp)
    };
    struct DomainState {
        DomainState(DomainId id, bool bypass) : domain(id, bypass) {}
        Domain domain;
        std::unique_ptr<TableState> table;  // set: table mode (never both: page_tables.md)
        std::uint64_t maps = 0, unmaps = 0;
        mutable std::atomic<std::uint64_t> faults{0};
        StatusCounts statuses{};
        std::vector<ResvRegion> reserved;  // union of the members' regions (checked by MAP, CONFORMANCE.md D52)
    };

    Status attach_locked(EndpointId endpoint, DomainId domain, std::uint32_t flags);
    Status detach_locked(EndpointId endpoint, DomainId domain);
    Status map_locked(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end, std::uint64_t phys_start,
                      std::uint32_t flags);
    Status unmap_locked(DomainId domain, std::uint64_t virt_start, std::uint64_t virt_end);
    Status attach_table_locked(EndpointId endpoint, DomainId domain, const TableDescriptor& table);
    Status invalidate_locked(DomainId domain, const Invalidation& what);
    // ---- shadowing (iommu_shadow.cpp)
    // The endpoint (with a listener) just joined its table-mode domain: if it is the first with
    // a listener, the whole table is walked into the host. On failure it is quarantined.
    Status shadow_joined(Endpoint& endpoint);
    // Brings the host runs of [first, last] to what the domain's table allows now; endpoints
    // whose host kept a run it had to drop are appended to `stale` (the caller quarantines them).
    Status shadow_sync(DomainState& state, std::uint64_t first, std::uint64_t last, std::vector<EndpointId>& stale);
    // No listener left in a table-mode domain: its runs are forgotten (the listeners dropped them).
    void shadow_forget(DomainState& state);
    // Maps `mapping` on every listener member, all or nothing: on failure it is undone on those
    // already done (those whose undo fails are appended to `stale`) and the refusing endpoint
    // noted in map_refused_for_.
    Status map_on_listeners(DomainState& state, const Mapping& mapping, std::vector<EndpointId>& stale);
    // An ATTACH or ATTACH_TABLE result, counted for the endpoint.
    Status count_attach(Endpoint& endpoint, Status status);
    // Whether the endpoint may create a domain under Limits::max_domains.
    bool room_for_domain(const Endpoint& endpoint) const;
    // The endpoint leaves its domain and joins `to`, or `created` (a new domain) when `to` is null.
    void join(Endpoint& endpoint, DomainState* to, std::unique_ptr<DomainState> created);
    Status check_domain_id(DomainId domain) const;
    DomainState* find_domain(DomainId id);
    Status listener_status(ListenerResult result);
    // Listener steps of moving `endpoint` out of its domain (if any) into `to` (exists, or null:
    // will be created with `to_bypass`, empty). On failure the caller quarantines it.
    Status move_listener(Endpoint& endpoint, DomainState* to, DomainId to_id, bool to_bypass);
    // After a listener failure: the endpoint's external IOMMU maps nothing (blocked).
    void block_listener(Endpoint& endpoint);
    // The endpoint leaves its domain and is blocked (its listener could not follow a change).
    void quarantine(Endpoint& endpoint);
    void quarantine_all(const std::vector<EndpointId>& ids);
    // The listener of an unattached endpoint takes the unattached mode, or is blocked.
    void settle_unattached(Endpoint& endpoint);
    void leave_domain(Endpoint& endpoint);
    bool translate_locked(const Endpoint& endpoint, std::uint64_t first, std::uint64_t last, Access access,
                          FragmentVisitor& visitor, std::optional<Fault>& fault) const;
    bool translate_table(const TableState& table, EndpointId endpoint, std::uint64_t first, std::uint64_t last,
                         Access access, FragmentVisitor& visitor, std::optional<Fault>& fault) const;
    // The leaf for `iova`: the IOTLB's, or a walk's (cached); nothing if the walk faults.
    std::optional<Stage1Leaf> resolve(const TableState& table, EndpointId endpoint, std::uint64_t iova) const;
    void deliver_fault(const Fault& fault) const;
    static DomainStats make_domain_stats(const DomainState& state);

    const Limits limits_;
    const vmm::GuestMemory* const ram_;
    mutable std::shared_mutex lock_;
    Geometry geometry_;
    bool unattached_bypass_ = false;
    std::unordered_map<EndpointId, Endpoint> endpoints_;
    std::unordered_map<DomainId, std::unique_ptr<DomainState>> domains_;
    std::size_t live_mappings_ = 0;
    std::uint64_t total_maps_ = 0, total_unmaps_ = 0;
    std::uint64_t listener_failures_ = 0, rollback_failures_ = 0, forced_detach_failures_ = 0;
    std::uint64_t blocked_endpoints_ = 0;
    std::vector<Mapping> scratch_;               // UNMAP's collected mappings, reused to avoid allocation
    std::optional<EndpointId> map_refused_for_;  // see Batch::refused_map_endpoint
    std::optional<RefusedRun> refused_run_;      // see Batch::refused_run
    vmm::RateLimiter log_;                       // guest-triggered warnings (an endpoint blocked)
    mutable vmm::RateLimiter walk_log_;          // table walks that faulted (any device thread)
    vmm::RateLimiter shadow_log_;                // shadow walks cut by their budget

    mutable std::mutex sink_lock_;
    FaultSink* sink_ = nullptr;
    mutable std::atomic<std::uint64_t> faults_{0};
    mutable std::atomic<std::uint64_t> faults_undelivered_{0};
};

}  // namespace iommu
