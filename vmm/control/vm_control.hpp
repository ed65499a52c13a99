// vmm::VmControl: the ControlTarget of a running VM, built by Machine::run from the machine's parts
// (non-owning: the transports of its devices, each device reached through the generic
// virtio::Device seam (describe, fail-next), so nothing here knows a device type, looks one up by
// name or casts it). Portable and unit-tested over real transports and devices: the Machine only
// lists what it has.
//
// Threads: every call runs on the event-loop thread. Devices are reached through
// MmioTransport::with_device (their transport lock), the Iommu through its own thread-safe
// observability calls, never while a transport lock is held (the lock order of
// iommu/virtio_iommu.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "iommu/iommu.hpp"
#include "iommu/virtio_iommu.hpp"
#include "virtio/device_handle.hpp"
#include "virtio/mmio_transport.hpp"
#include "vmm/control/target.hpp"

namespace vmm {

struct VmControlDevice {
    unsigned slot = 0;                           // virtio-mmio slot
    std::string label{};                         // what the user names it: "blk0", "rng", "console", "iommu"
    virtio::MmioTransport* transport = nullptr;  // never null
    std::optional<std::uint32_t> endpoint{};     // behind the vIOMMU: its endpoint ID
};

struct VmControlParts {
    std::string name;
    unsigned cpus = 0;
    std::uint64_t mem_mib = 0;
    std::vector<VmControlDevice> devices;             // slot order
    std::shared_ptr<iommu::Iommu> iommu;              // null: no vIOMMU
    virtio::DeviceHandle<iommu::VirtioIommu> viommu;  // its virtio-iommu (unset: no vIOMMU)
    std::function<void()> stop;                       // the orderly-shutdown path (as SIGTERM)
    // Assigned PCI functions (--vfio-pci): their BARs and the host DMA state of each VFIO container
    // (entries, pinned memory, maps/unmaps), one line each; null when nothing is assigned.
    std::function<std::string()> vfio;
    // The serial console (the 16550 UART): host input it dropped because the guest did not read,
    // and output bytes lkvm's stdout could not take. One line; null when there is none.
    std::function<std::string()> serial;
};

class VmControl final : public ControlTarget {
public:
    explicit VmControl(VmControlParts parts);

    void stop() override;
    std::string stat() override;
    ControlResponse dump() override;
    ControlResponse inject_fault(std::uint32_t endpoint, bool write, std::uint64_t address) override;
    ControlResponse fail_next(std::string_view target, unsigned count) override;

private:
    const VmControlDevice* find_device(std::string_view target) const;
    std::string endpoint_list() const;

    VmControlParts parts_;
};

}  // namespace vmm
