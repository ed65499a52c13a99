#include "devices/gic_v3_node.hpp"

namespace devices {

void GicV3Node::write_fdt(fdt::Writer& w, const fdt::Context& context) const {
    auto gic = w.node("intc", distributor_.base().value);
    w.property_string("compatible", "arm,gic-v3");
    w.property_u32("#interrupt-cells", 3);
    w.property_empty("interrupt-controller");
    w.property_reg({distributor_, redistributors_});
    // The ITS is a child with its own reg, in the parent's address space (empty ranges).
    w.property_u32("#address-cells", 2);
    w.property_u32("#size-cells", 2);
    w.property_empty("ranges");
    w.property_u32("phandle", context.phandle(fdt::Phandle::Gic));
    if (its_) {
        auto its = w.node("its", its_->base().value);
        w.property_string("compatible", "arm,gic-v3-its");
        w.property_empty("msi-controller");
        w.property_u32("#msi-cells", 1);  // the cell is the ITS DeviceID
        w.property_reg({*its_});
        w.property_u32("phandle", context.phandle(fdt::Phandle::Its));
    }
}

}  // namespace devices
