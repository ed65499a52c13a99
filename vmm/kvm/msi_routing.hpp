// MSIs of assigned PCI functions into the in-kernel vITS: each MSI-X vector's VFIO eventfd is a KVM
// irqfd on a GSI whose route is an MSI entry carrying the ITS DeviceID (KVM_MSI_VALID_DEVID).
// KVM_SET_GSI_ROUTING replaces the whole table, so the identity SPI routes KVM installs at vGIC
// init (which the virtio irqfds rely on) are re-stated every time.
// Documentation/virt/kvm/devices/arm-vgic-its.rst; api.rst 4.52 (KVM_SET_GSI_ROUTING), 4.75
// (KVM_IRQFD).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "devices/pci/msi_router.hpp"
#include "vmm/base/address.hpp"
#include "vmm/base/log.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

// Threads: route/unroute come from vCPU threads (MSI-X table and control writes, under the
// function's lock); one mutex serialises the routing table.
class MsiRouting final : public devices::pci::MsiRouter {
public:
    // `spis`: SPIs 0..spis-1 keep their identity routes. `its_frame`: the ITS translation frame
    // (ITS base + 64 KiB, 64 KiB long), the only doorbell a route may target.
    MsiRouting(const Vm& vm, std::uint32_t spis, GuestRange its_frame);
    ~MsiRouting();
    MsiRouting(const MsiRouting&) = delete;
    MsiRouting& operator=(const MsiRouting&) = delete;

    bool route(int eventfd, std::uint16_t rid, const devices::pci::MsiMessage& message) override;
    void unroute(int eventfd) override;

    std::size_t route_count() const;

private:
    struct Route {
        std::uint32_t gsi;
        std::uint16_t rid;
        devices::pci::MsiMessage message;
    };
    bool commit();           // lock held
    void drop(int eventfd);  // lock held: deassign and forget the eventfd's route
    bool set_irqfd(int eventfd, std::uint32_t gsi, bool assign);

    const Vm& vm_;
    const std::uint32_t spis_;
    const GuestRange its_frame_;
    const bool devid_;  // KVM_CAP_MSI_DEVID: the ITS needs a DeviceID with every MSI
    mutable std::mutex lock_;
    std::map<int, Route> routes_;  // by eventfd
    std::vector<std::uint32_t> free_gsis_;
    std::uint32_t next_gsi_;
    RateLimiter log_;
};

}  // namespace vmm::kvm
