// The device-tree node of one virtio-mmio slot: reg, one edge-rising SPI, dma-coherent, and (behind
// the vIOMMU) iommus = <&viommu endpoint>. Binding:
// Documentation/devicetree/bindings/virtio/mmio.yaml.
#pragma once

#include <cstdint>
#include <optional>

#include "fdt/contributor.hpp"
#include "vmm/base/address.hpp"

namespace devices {

class VirtioMmioNode final : public fdt::Contributor {
public:
    VirtioMmioNode(vmm::GuestRange window, std::uint32_t spi) : window_(window), spi_(spi) {}

    // This slot's DMA goes through the virtio-iommu as endpoint `endpoint`.
    void set_iommu_endpoint(std::uint32_t endpoint) { iommu_endpoint_ = endpoint; }
    // This slot is the virtio-iommu itself.
    void set_is_iommu(bool is_iommu) { is_iommu_ = is_iommu; }

    void write_fdt(fdt::Writer& writer, const fdt::Context& context) const override;
    std::uint64_t fdt_address() const override { return window_.base().value; }

private:
    vmm::GuestRange window_;
    std::uint32_t spi_;
    std::optional<std::uint32_t> iommu_endpoint_;
    bool is_iommu_ = false;
};

}  // namespace devices
