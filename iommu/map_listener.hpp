// The seam between the IOMMU model and an external IOMMU that must mirror an endpoint's address
// space (the VFIO container of an assigned device, reference section 4.2). Leaf interface.
#pragma once

#include <cstdint>

#include "iommu/types.hpp"

namespace iommu {

// How a listener call ended. The model turns it into the request's status: NoMemory -> S_NOMEM
// (VFIO -ENOSPC / -ENOMEM: entry or memlock budget exhausted), Invalid -> S_INVAL (the host
// refused the arguments, e.g. an IOVA outside its usable ranges), Failed -> S_DEVERR.
enum class ListenerResult : std::uint8_t { Ok, NoMemory, Invalid, Failed };

// Receives every change of one or more endpoints' address spaces. The model calls it with its
// exclusive lock held, from the thread that processes virtio-iommu requests (or the VMM thread
// during setup and reset), never concurrently for one Iommu. So a listener must not call back
// into the Iommu (translate(), requests): it gets everything it needs in the arguments. (To
// recompute an MSI route after a change, translate the doorbell address later, outside the call.)
//
// Contract: each call is all-or-nothing. If it fails, the endpoint's host state must be exactly
// what it was before the call; the model then undoes the calls that already succeeded for the
// same request (on this and other endpoints) so that the domain and every backend end up as
// before the request.
//
// Per endpoint the calls follow this state machine:
//   unattached --attach--> in domain --map/unmap*--> in domain --detach--> unattached
//   unattached --detach--> unattached   (re-states the unattached mode: blocked or bypass)
class MapListener {
public:
    // Drop whatever the endpoint's address space holds; afterwards it translates nothing
    // (`bypass` false: DMA blocked) or everything one to one (`bypass` true).
    virtual ListenerResult detach(EndpointId endpoint, bool bypass) = 0;
    // The endpoint (unattached) joins `domain`. Its address space starts empty (translating
    // domain, the domain's mappings follow as map() calls) or identity (bypass domain).
    virtual ListenerResult attach(EndpointId endpoint, DomainId domain, bool bypass) = 0;
    virtual ListenerResult map(EndpointId endpoint, const Mapping& mapping) = 0;
    // `mapping` is exactly one earlier map() argument (mappings are never split, 5.13.6.6).
    virtual ListenerResult unmap(EndpointId endpoint, const Mapping& mapping) = 0;

protected:
    ~MapListener() = default;
};

}  // namespace iommu
