// vmm::VfioSetup: the machine's --vfio-pci, in one object: the ECAM PCIe host bridge and its
// BAR windows (direct parts as KVM memory slots), MSI routes into the vITS, the KVM-VFIO device,
// and every assigned function (devices::vfio::Assignment). The machine makes five calls:
// construct (before the vIOMMU), add_to_bus, and with --viommu vfio narrow + add_endpoints;
// stop() first thing at teardown. Steps 5 and 6 of Machine::Machine.
//
// Memory map: ECAM at layout::kPcieEcamBase (bus 0 only), BARs in the 32-bit window (and 64-bit
// prefetchable ones in the 64-bit window), so the VM needs the IPA size of
// layout::ipa_bits_for(ram, true). IDs: a function's RID is its ITS DeviceID and its virtio-iommu
// endpoint ID (devices/pci/host_bridge.hpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/pci/bar_allocator.hpp"
#include "devices/pci/bar_windows.hpp"
#include "devices/pci/host_bridge.hpp"
#include "devices/vfio/assignment.hpp"
#include "devices/vfio/host.hpp"
#include "devices/vfio/host_geometry.hpp"
#include "iommu/iommu.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/kvm/memory_slots.hpp"
#include "vmm/kvm/msi_routing.hpp"
#include "vmm/kvm/vfio_kvm_device.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm {

// Built and torn down on the main thread; at run time its parts are called from vCPU threads
// (see each part's threading note).
class VfioSetup {
public:
    // Opens and wires every function; throws SetupError with one line (nothing stays open).
    VfioSetup(kvm::Vm& vm, const GuestMemory& memory, const std::vector<std::string>& bdfs, bool behind_viommu);
    ~VfioSetup();
    VfioSetup(const VfioSetup&) = delete;
    VfioSetup& operator=(const VfioSetup&) = delete;

    // Routes the ECAM window and the BAR windows to the bridge.
    void add_to_bus(MmioBus& bus);
    // The vIOMMU geometry narrowed to what every host container supports (page sizes, IOVA span);
    // `max_granule` is the guest's page size.
    iommu::IovaWindow narrow(const iommu::IovaWindow& wanted, std::uint64_t max_granule) const;
    // Registers every function with `model` (endpoint = RID, PROBE regions: the ITS doorbell frame
    // as MSI, host IOVA holes as RESERVED; listener: the DmaMapper) and adds iommu-map to the DT.
    void add_endpoints(iommu::Iommu& model, const iommu::IovaWindow& window);
    // Teardown step one: functions stop mastering, every DMA mapping goes (before the vIOMMU).
    void stop();

    const fdt::Contributor& fdt_node() const { return bridge_; }
    const devices::vfio::DmaMapper& mapper() const { return *assignment_->mapper(); }
    // BAR layouts and DMA state, one line each.
    std::string describe() const;

private:
    kvm::MsiRouting msi_;
    kvm::MemorySlots slots_;
    devices::pci::BarWindows windows_;
    devices::pci::HostBridge bridge_;
    devices::vfio::LinuxHost host_;
    devices::pci::BarAllocator allocator_;
    std::unique_ptr<devices::vfio::Assignment> assignment_;  // uses everything above
    std::optional<kvm::VfioKvmDevice> kvm_vfio_;             // names the groups the assignment opened
};

}  // namespace vmm
