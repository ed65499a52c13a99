#include "devices/virtio_mmio_node.hpp"

namespace devices {

void VirtioMmioNode::write_fdt(fdt::Writer& w, const fdt::Context& context) const {
    auto node = w.node("virtio_mmio", window_.base().value);
    w.property_string("compatible", "virtio,mmio");
    w.property_reg({window_});
    // The transport signals with an edge per notification (an irqfd pulse on the SPI).
    context.interrupts(w, {fdt::Interrupt::spi(spi_, fdt::Interrupt::Trigger::EdgeRising)});
    // Software devices are cache-coherent; without this Linux uses non-cacheable DMA buffers.
    w.property_empty("dma-coherent");
    if (is_iommu_) {
        w.property_u32("#iommu-cells", 1);
        w.property_u32("phandle", context.phandle(fdt::Phandle::Iommu));
    }
    if (iommu_endpoint_) w.property_u32s("iommus", {context.phandle(fdt::Phandle::Iommu), *iommu_endpoint_});
}

}  // namespace devices
