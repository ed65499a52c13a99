#include "vmm/kvm/gic.hpp"

#include <linux/kvm.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"

namespace vmm::kvm {

Gic::Gic(Vm& vm, unsigned vcpus) {
    namespace layout = vmm::layout;
    try {
        gic_ = vm.create_device(KVM_DEV_TYPE_ARM_VGIC_V3, "GICv3");
    } catch (const SetupError& e) {
        throw SetupError(std::string(e.what()) +
                         "; lkvm needs a GICv3 host (KVM cannot emulate GICv3 on a GICv2 host)");
    }
    const std::uint64_t dist = layout::kGicDistBase;
    const std::uint64_t redist = layout::gic_redistributors(vcpus).base().value;
    const std::uint32_t nr_irqs = layout::kGicNrIrqs;
    set_device_attr(gic_.get(), KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, &dist,
                    "GICv3 distributor address");
    set_device_attr(gic_.get(), KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, &redist,
                    "GICv3 redistributor address");
    set_device_attr(gic_.get(), KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr_irqs, "GICv3 number of interrupts");
    set_device_attr(gic_.get(), KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr, "GICv3 initialization");

    // The ITS translates MSIs (PCIe, VFIO) into LPIs; it needs the initialized GICv3.
    its_ = vm.create_device(KVM_DEV_TYPE_ARM_VGIC_ITS, "GICv3 ITS");
    const std::uint64_t its = layout::kGicItsBase;
    set_device_attr(its_.get(), KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, &its, "GICv3 ITS address");
    set_device_attr(its_.get(), KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr,
                    "GICv3 ITS initialization");
}

}  // namespace vmm::kvm
