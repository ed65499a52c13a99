// The seam between the IOMMU model and an external IOMMU that must mirror an endpoint's address
// space (the VFIO container of an assigned device: VFIO type-1, include/uapi/linux/vfio.h). Leaf
// interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "iommu/types.hpp"

namespace iommu {

// How a listener call ended. The model turns it into the request's status: NoMemory -> S_NOMEM
// (VFIO -ENOSPC / -ENOMEM: entry or memlock budget exhausted), Invalid -> S_INVAL (the host
// refused the arguments, e.g. an IOVA outside its usable ranges), Failed -> S_DEVERR.
enum class ListenerResult : std::uint8_t { Ok, NoMemory, Invalid, Failed };

// The mappings of the domain an endpoint joins, handed to attach() so that a listener sees the
// whole replay before it touches its host (and can refuse it at once when it cannot fit).
class MappingSource {
public:
    virtual std::size_t size() const = 0;
    // Calls fn on each mapping in IOVA order until it returns false; true if it never did.
    virtual bool all_of(const std::function<bool(const Mapping&)>& fn) const = 0;

protected:
    ~MappingSource() = default;
};

// Receives every change of one or more endpoints' address spaces. The model calls it with its
// exclusive lock held, from the thread that processes virtio-iommu requests (or the VMM thread
// during setup and reset), never concurrently for one Iommu. So a listener must not call back
// into the Iommu (translate(), requests): it gets everything it needs in the arguments. (To
// recompute an MSI route after a change, translate the doorbell address later, outside the call.)
//
// Contract (isolation first: the host never holds an entry the model does not allow):
//  * map() is all or nothing: on failure the host holds none of the mapping.
//  * unmap() removes the mapping; it fails only if the host kept some of it (the model then
//    keeps the mapping, and may block the endpoint).
//  * attach() and detach() that fail leave the endpoint *blocked*: nothing of its old or new
//    state stays in the host, never its previous state. The model then records the endpoint as
//    unattached and blocked, and confirms with detach(endpoint, false).
//  * detach(endpoint, false) maps nothing, so it can only fail if the host refuses to unmap;
//    a listener must try everything it can (e.g. emptying the whole host address space) before
//    it reports that failure, which the model counts as stale host state.
//
// Per endpoint the calls follow this state machine:
//   unattached --attach--> in domain --map/unmap*--> in domain --detach--> unattached
//   unattached --detach--> unattached   (re-states the unattached mode: blocked or bypass)
class MapListener {
public:
    // Drop whatever the endpoint's address space holds; afterwards it translates nothing
    // (`bypass` false: DMA blocked) or everything one to one (`bypass` true).
    virtual ListenerResult detach(EndpointId endpoint, bool bypass) = 0;
    // The endpoint (unattached) joins `domain` with its current `mappings` (none for a bypass
    // domain, whose address space is the identity).
    virtual ListenerResult attach(EndpointId endpoint, DomainId domain, bool bypass, const MappingSource& mappings) = 0;
    virtual ListenerResult map(EndpointId endpoint, const Mapping& mapping) = 0;
    // `mapping` is exactly one earlier map() argument (mappings are never split, 5.13.6.6).
    virtual ListenerResult unmap(EndpointId endpoint, const Mapping& mapping) = 0;

protected:
    ~MapListener() = default;
};

}  // namespace iommu
