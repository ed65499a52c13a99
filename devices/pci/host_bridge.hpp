// devices::pci::HostBridge: a generic ECAM PCIe host bridge (bindings pci/host-generic-pci.yaml,
// pci/pci-msi.txt, pci/pci-iommu.txt; PCIe 4.0 7.2.2 ECAM) with one bus, bus 0.
//
// ID scheme, one rule everywhere: a function's Requester ID (bus << 8 | device << 3 | function)
// is also its virtio-iommu endpoint ID (iommu-map = <0 &viommu 0 0x10000>) and its ITS DeviceID
// (msi-map = <0 &its 0 0x10000>), and KVM MSI routes carry that DeviceID (KVM_MSI_VALID_DEVID).
// virtio-mmio endpoints must therefore use endpoint IDs above 0xffff.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>

#include "devices/pci/function.hpp"
#include "fdt/contributor.hpp"
#include "vmm/base/address.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/log.hpp"

namespace devices::pci {

struct HostBridgeLayout {
    vmm::GuestRange ecam;    // at least 1 MiB (bus 0); only bus 0 is decoded
    vmm::GuestRange io;      // PCI I/O window (no I/O BARs are exposed; described for completeness)
    vmm::GuestRange mmio32;  // non-prefetchable, below 4 GiB
    vmm::GuestRange mmio64;  // 64-bit prefetchable
};

// Threads: config accesses come from vCPU threads; the function table is fixed before the guest
// runs, so lookups need no lock (functions guard themselves).
class HostBridge final : public vmm::MmioDevice, public fdt::Contributor {
public:
    static constexpr std::uint64_t kBusConfigSize = std::uint64_t{1} << 20;  // 32 devices x 8 functions x 4 KiB
    static constexpr unsigned kDevices = 32;

    explicit HostBridge(const HostBridgeLayout& layout);

    // Places `function` (not owned; it must outlive the bridge's users) at the next free device
    // number, function 0, and returns its address. Throws vmm::SetupError when the bus is full.
    Bdf add(Function& function);
    // Writes iommu-map to the virtio-iommu (fdt::Phandle::Iommu) in the node.
    void set_iommu(bool behind_iommu) { behind_iommu_ = behind_iommu; }
    std::size_t function_count() const;
    std::size_t free_devices() const { return kDevices - function_count(); }
    const HostBridgeLayout& layout() const { return layout_; }
    // The bus range the MmioBus must route here.
    vmm::GuestRange ecam_window() const;

    // ---- vmm::MmioDevice (ECAM)
    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    // ---- fdt::Contributor
    void write_fdt(fdt::Writer& writer, const fdt::Context& context) const override;
    std::uint64_t fdt_address() const override { return layout_.ecam.base().value; }

private:
    // The function at ECAM `offset` and the register offset inside its space, or null.
    Function* decode(std::uint64_t offset, std::uint16_t& reg) const;

    HostBridgeLayout layout_;
    bool behind_iommu_ = false;
    std::array<Function*, kDevices> devices_{};  // function 0 of each device number
    vmm::RateLimiter log_;
};

}  // namespace devices::pci
