// devices::vfio::DmaMapper: the iommu::MapListener that mirrors virtio-iommu address spaces into
// VFIO type-1 containers (drivers/vfio/vfio_iommu_type1.c): MAP -> VFIO_IOMMU_MAP_DMA with the
// guest's READ/WRITE, UNMAP -> VFIO_IOMMU_UNMAP_DMA, ATTACH/DETACH move an endpoint's host state,
// bypass maps guest RAM one to one on demand, and the container's budget (dma_entry_limit,
// RLIMIT_MEMLOCK) is checked before the host is asked, so an exhausted budget is S_NOMEM with a
// clear log line.
//
// Container policy (why a "space" is a container, and who shares one):
//  * A VFIO group cannot leave its container while its device fd is open (UNSET_CONTAINER ->
//    EBUSY), and the device fd is open for the guest's whole life. So the host address space of
//    an assigned function is fixed at setup and cannot follow the guest's domain changes;
//    instead a container's *contents* follow them (replay on attach, drop on detach).
//  * Without a vIOMMU all groups share one container holding all guest RAM (map_all_ram).
//  * With --viommu vfio each host IOMMU group gets its own container, because guest domains
//    must stay isolated from each other and the host can only isolate groups. Every assigned
//    function of one group is an endpoint of that one container, and this mapper keeps one host
//    mapping per guest mapping per container, however many of the container's endpoints the
//    model fans the MAP out to (the others only add a holder). Functions of one host group
//    cannot be put in different guest domains (the host cannot separate them): such an ATTACH
//    is refused with S_INVAL.
//  * A guest domain spanning several host groups costs one host map per group; with legacy
//    type-1 (L1 has no IOMMUFD) nothing cheaper keeps per-domain isolation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/vfio/container.hpp"
#include "iommu/map_listener.hpp"
#include "iommu/types.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/base/log.hpp"

namespace devices::vfio {

struct DmaSpaceStats {
    std::string name;
    std::vector<iommu::EndpointId> endpoints;
    bool identity = false;                  // guest RAM mapped one to one (bypass or no vIOMMU)
    std::optional<iommu::DomainId> domain;  // translated domain whose mappings it holds
    std::uint64_t guest_mappings = 0;       // distinct guest mappings held
    std::uint64_t host_mappings = 0;        // live VFIO DMA entries
    std::uint64_t entry_limit = 0;          // VFIO DMA entries this container may hold
    std::uint64_t pinned_bytes = 0;
    std::uint64_t host_maps = 0, host_unmaps = 0;  // VFIO ioctls issued
    std::uint64_t shared_hits = 0;                 // MAPs served by a mapping another endpoint holds
    std::uint64_t budget_refusals = 0;             // S_NOMEM answered before asking the host
    std::uint64_t host_failures = 0;               // ioctls the host refused
    // A host unmap failed even when retried: the container was emptied (VFIO_DMA_UNMAP_FLAG_ALL)
    // and refilled with what it should hold; mappings it could not refill are lost (their DMA
    // faults) but stay known, so the guest can still UNMAP them.
    std::uint64_t rebuilds = 0, lost_mappings = 0;
    std::uint64_t stale = 0;  // even emptying the container failed: it may hold stale entries
};

struct DmaMapperStats {
    std::vector<DmaSpaceStats> spaces;
    std::uint64_t pinned_bytes = 0;
    std::optional<std::uint64_t> memlock_budget;  // nothing: unlimited
};

// Threads: listener calls come from the virtio-iommu request path (Iommu lock held);
// set_bus_master from vCPU threads (a function's lock held). One mutex guards all state; the
// mapper calls nothing but the containers, so it cannot be part of a lock cycle.
class DmaMapper final : public iommu::MapListener {
public:
    DmaMapper(const vmm::GuestMemory& memory, Host& host);
    ~DmaMapper();
    DmaMapper(const DmaMapper&) = delete;
    DmaMapper& operator=(const DmaMapper&) = delete;

    // `endpoint` translates through `container` (shared by every function of one host group).
    // The endpoint starts blocked; Iommu::add_endpoint then states its unattached mode.
    void add_endpoint(iommu::EndpointId endpoint, std::shared_ptr<Container> container);
    // No vIOMMU: `container` maps all guest RAM at IOVA = GPA now, for the machine's lifetime.
    // Throws vmm::SetupError (with the budget or host error) if it cannot.
    void map_all_ram(std::shared_ptr<Container> container);
    // Bus Master Enable of the endpoint's function. Bypass pins guest RAM only while some
    // endpoint that bypasses can actually master the bus.
    void set_bus_master(iommu::EndpointId endpoint, bool enabled);

    // ---- iommu::MapListener
    iommu::ListenerResult detach(iommu::EndpointId endpoint, bool bypass) override;
    iommu::ListenerResult attach(iommu::EndpointId endpoint, iommu::DomainId domain, bool bypass,
                                 const iommu::MappingSource& mappings) override;
    iommu::ListenerResult map(iommu::EndpointId endpoint, const iommu::Mapping& mapping) override;
    iommu::ListenerResult unmap(iommu::EndpointId endpoint, const iommu::Mapping& mapping) override;

    // At teardown, after the functions stopped mastering the bus: unmaps everything now, while
    // the groups are still open. Later listener calls (the vIOMMU's reset as it goes away)
    // succeed without touching the host: no device can DMA any more, and re-creating a bypass
    // identity map just to drop it would pin all guest RAM for nothing. The destructor unmaps
    // too if this was not called.
    void shutdown();

    DmaMapperStats stats() const;
    std::string describe() const;  // one line per space, for `lkvm stat` and --debug

private:
    // One host DMA entry: IOVA range backed by host memory.
    struct Fragment {
        std::uint64_t iova = 0;
        std::uint64_t size = 0;
        const void* host = nullptr;
    };
    struct HostMapping {
        iommu::Mapping mapping;
        // Exactly the entries the host holds for it: empty for record-only mappings (MMIO, no
        // R/W) and for mappings lost in a rebuild.
        std::vector<Fragment> fragments;
        std::vector<iommu::EndpointId> holders;
    };
    struct Space {
        std::shared_ptr<Container> container;
        std::vector<iommu::EndpointId> endpoints;
        std::uint64_t entry_limit = 0;
        std::uint64_t entries = 0;  // host entries, always exactly what the container holds
        std::uint64_t pinned = 0;
        bool static_identity = false;  // no vIOMMU: never changes
        bool identity = false;
        bool near_limit_warned = false;
        std::vector<Fragment> identity_fragments;
        std::map<std::uint64_t, HostMapping> mappings;  // by first IOVA
        DmaSpaceStats counters;
    };
    enum class Mode : std::uint8_t { Blocked, Bypass, Domain, BypassDomain };
    struct Endpoint {
        Space* space = nullptr;
        Mode mode = Mode::Blocked;
        iommu::DomainId domain = 0;
        bool bus_master = false;
    };

    // The preamble every listener call shares: lock, nothing to do after shutdown(), the
    // endpoint must be known (and, for map/unmap, in a translated domain).
    template <class Fn>
    iommu::ListenerResult with_endpoint(iommu::EndpointId endpoint, bool translated_only, Fn&& fn);
    Space& space_for(const std::shared_ptr<Container>& container);
    Endpoint* find(iommu::EndpointId endpoint);
    // The host fragments for guest [gpa, gpa + size) at `iova`: the parts backed by RAM.
    std::vector<Fragment> fragments_for(std::uint64_t iova, std::uint64_t gpa, std::uint64_t size) const;
    std::vector<Fragment> fragments_for(const iommu::Mapping& mapping) const;
    std::vector<Fragment> identity_fragments(const Space& space) const;
    // Whether `entries` more host entries pinning `bytes` fit the container's entry budget and
    // RLIMIT_MEMLOCK; logs the refusal (rate-limited) if not.
    bool fits(Space& space, std::uint64_t entries, std::uint64_t bytes, const char* what, std::uint64_t iova);
    void warn_if_near_budget(Space& space);
    // All or nothing: maps every fragment or none (budget checked first).
    iommu::ListenerResult map_fragments(Space& space, const std::vector<Fragment>& fragments, bool reads, bool writes,
                                        const char* what);
    // Removes fragments the records no longer hold from the host. Cannot be refused: an unmap
    // that fails twice empties and refills the container (rebuild). False only if even that
    // failed.
    bool drop(Space& space, const std::vector<Fragment>& fragments);
    bool rebuild(Space& space);
    void account_unmapped(Space& space, const Fragment& fragment);
    // The domain the space's translated members share, if any.
    std::optional<iommu::DomainId> translated_domain(const Space& space, iommu::EndpointId except) const;
    // Makes the identity map match what the members need. Only adding it can fail.
    iommu::ListenerResult reconcile_identity(Space& space);
    // Drops `endpoint` as a holder of every mapping of its space (host unmap when it was the
    // last). False only if the host kept some (see drop()).
    bool release_holder(Space& space, iommu::EndpointId endpoint);
    // The listener contract's fallback: nothing of the endpoint stays in the host.
    void block(Endpoint& endpoint, iommu::EndpointId id);
    // ATTACH into a translated domain: the whole replay is checked against the budget first.
    iommu::ListenerResult replay(Space& space, iommu::EndpointId endpoint, const iommu::MappingSource& mappings);
    void teardown(Space& space);

    const vmm::GuestMemory& memory_;
    Host& host_;
    mutable std::mutex lock_;
    std::vector<std::unique_ptr<Space>> spaces_;
    std::map<iommu::EndpointId, Endpoint> endpoints_;
    std::optional<std::uint64_t> memlock_budget_;
    std::uint64_t pinned_ = 0;
    bool shut_down_ = false;
    vmm::RateLimiter log_;
};

}  // namespace devices::vfio
