// devices::pci::MsiRouter: the seam between a function's MSI-X vectors and the interrupt
// controller. With KVM an eventfd becomes an irqfd on an MSI route to the vITS
// (Documentation/virt/kvm/devices/arm-vgic-its.rst, KVM_SET_GSI_ROUTING in api.rst); tests record
// the calls. Leaf interface.
#pragma once

#include <cstdint>

#include "devices/pci/msix_table.hpp"

namespace devices::pci {

// Called with the owning function's lock held, from vCPU threads or the building thread.
class MsiRouter {
public:
    // Signals of `eventfd` deliver `message` as an MSI from requester `rid` (the ITS DeviceID).
    // Replaces the eventfd's previous route. False when refused (the eventfd is then unrouted:
    // its signals wait in the eventfd, as for a masked vector).
    virtual bool route(int eventfd, std::uint16_t rid, const MsiMessage& message) = 0;
    // Signals of `eventfd` are no longer delivered; they accumulate in the eventfd, so routing it
    // again delivers one that arrived meanwhile (the MSI-X pending bit, 6.8.2.9).
    virtual void unroute(int eventfd) = 0;

protected:
    ~MsiRouter() = default;
};

}  // namespace devices::pci
