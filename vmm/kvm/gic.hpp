// The in-kernel vGICv3 (distributor + one redistributor per vCPU) and its ITS, created through
// KVM's device API at the addresses of vmm/base/layout.hpp. KVM's arm-vgic-v3.rst and
// arm-vgic-its.rst. The device-tree half is devices::GicV3Node.
#pragma once

#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

class Gic {
public:
    // Creates and initializes the GIC; call after every vCPU exists (CTRL_INIT sizes the
    // redistributors by the vCPUs). Throws SetupError naming the step that failed.
    Gic(Vm& vm, unsigned vcpus);

private:
    UniqueFd gic_;
    UniqueFd its_;
};

}  // namespace vmm::kvm
