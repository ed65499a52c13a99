#include "devices/pci/host_bridge.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "devices/pci/config_space.hpp"
#include "vmm/base/error.hpp"

namespace devices::pci {
namespace {

// ECAM address bits (PCIe 4.0 7.2.2): device [19:15], function [14:12], register [11:0].
constexpr unsigned kDeviceShift = 15;
constexpr unsigned kFunctionShift = 12;

// The first cell of a PCI address (pci-bus binding, "phys.hi"): space code in bits 25:24,
// 64-bit and prefetchable flags.
constexpr std::uint32_t kSpaceIo = 0x01000000;
constexpr std::uint32_t kSpaceMem32 = 0x02000000;
constexpr std::uint32_t kSpaceMem64 = 0x03000000;
constexpr std::uint32_t kPrefetchable = 0x40000000;

constexpr std::uint32_t hi(std::uint64_t v) { return static_cast<std::uint32_t>(v >> 32); }
constexpr std::uint32_t lo(std::uint64_t v) { return static_cast<std::uint32_t>(v); }
constexpr std::uint32_t kRidSpace = 0x10000;  // every RID of the segment maps one to one

}  // namespace

HostBridge::HostBridge(const HostBridgeLayout& layout) : layout_(layout) {
    if (layout_.ecam.size() < kBusConfigSize)
        throw vmm::SetupError("PCIe host bridge: ECAM window smaller than one bus");
}

vmm::GuestRange HostBridge::ecam_window() const { return *vmm::GuestRange::make(layout_.ecam.base(), kBusConfigSize); }

Bdf HostBridge::add(Function& function) {
    for (unsigned d = 0; d < kDevices; ++d) {
        if (devices_[d]) continue;
        devices_[d] = &function;
        return Bdf{0, static_cast<std::uint8_t>(d), 0};
    }
    throw vmm::SetupError("PCIe host bridge: no free device number for " + std::string(function.name()) +
                          " (bus 0 holds 32 devices)");
}

std::size_t HostBridge::function_count() const {
    return static_cast<std::size_t>(std::count_if(devices_.begin(), devices_.end(), [](Function* f) { return f; }));
}

Function* HostBridge::decode(std::uint64_t offset, std::uint16_t& reg) const {
    if (offset >= kBusConfigSize) return nullptr;
    const auto device = static_cast<unsigned>((offset >> kDeviceShift) & 0x1f);
    const auto function = static_cast<unsigned>((offset >> kFunctionShift) & 7);
    reg = static_cast<std::uint16_t>(offset & (kConfigSize - 1));
    return function == 0 ? devices_[device] : nullptr;
}

void HostBridge::mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::uint16_t reg = 0;
    Function* function = decode(offset, reg);
    if (!valid_config_access(reg, data.size())) {
        std::memset(data.data(), 0, data.size());
        vmm::guest_error(
            log_, "pci: config read of %zu bytes at ECAM offset 0x%" PRIx64 " is not an aligned 1/2/4-byte access",
            data.size(), offset);
        return;
    }
    if (!function) {
        // No function there: all ones, so the vendor ID reads 0xffff (PCIe 4.0 2.3.2).
        std::memset(data.data(), 0xff, data.size());
        return;
    }
    function->config_read(reg, data);
}

void HostBridge::mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    std::uint16_t reg = 0;
    Function* function = decode(offset, reg);
    if (!valid_config_access(reg, data.size())) {
        vmm::guest_error(
            log_, "pci: config write of %zu bytes at ECAM offset 0x%" PRIx64 " is not an aligned 1/2/4-byte access",
            data.size(), offset);
        return;
    }
    if (function) function->config_write(reg, data);
}

void HostBridge::write_fdt(fdt::Writer& w, const fdt::Context& context) const {
    auto node = w.node("pcie", layout_.ecam.base().value);
    w.property_string("compatible", "pci-host-ecam-generic");
    w.property_string("device_type", "pci");
    w.property_u32("#address-cells", 3);
    w.property_u32("#size-cells", 2);
    w.property_u32("#interrupt-cells", 1);
    w.property_reg({ecam_window()});
    w.property_u32s("bus-range", {0, 0});
    w.property_u32("linux,pci-domain", 0);
    // ranges: <pci-address(3) cpu-address(2) size(2)>, identity-mapped windows.
    const auto& io = layout_.io;
    const auto& m32 = layout_.mmio32;
    const auto& m64 = layout_.mmio64;
    const std::vector<std::uint32_t> ranges{kSpaceIo,
                                            0,
                                            0,
                                            hi(io.base().value),
                                            lo(io.base().value),
                                            hi(io.size()),
                                            lo(io.size()),
                                            kSpaceMem32,
                                            hi(m32.base().value),
                                            lo(m32.base().value),
                                            hi(m32.base().value),
                                            lo(m32.base().value),
                                            hi(m32.size()),
                                            lo(m32.size()),
                                            kSpaceMem64 | kPrefetchable,
                                            hi(m64.base().value),
                                            lo(m64.base().value),
                                            hi(m64.base().value),
                                            lo(m64.base().value),
                                            hi(m64.size()),
                                            lo(m64.size())};
    w.property_u32s("ranges", ranges);
    // MSIs go to the ITS with DeviceID = RID; DMA goes through the virtio-iommu with endpoint
    // ID = RID (Documentation/devicetree/bindings/pci/pci-iommu.txt).
    w.property_u32s("msi-map", {0, context.phandle(fdt::Phandle::Its), 0, kRidSpace});
    if (behind_iommu_) w.property_u32s("iommu-map", {0, context.phandle(fdt::Phandle::Iommu), 0, kRidSpace});
    // lkvm's devices (and VFIO through the host IOMMU) are cache-coherent.
    w.property_empty("dma-coherent");
}

}  // namespace devices::pci
