// The KVM-VFIO pseudo device (KVM_DEV_TYPE_VFIO, Documentation/virt/kvm/devices/vfio.rst): tells
// KVM which VFIO groups the VM uses, so it can account for them (e.g. cache coherency of DMA).
#pragma once

#include <vector>

#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

class VfioKvmDevice {
public:
    // Creates the device; a host without it (no CONFIG_KVM_VFIO) just gets a debug line.
    explicit VfioKvmDevice(Vm& vm);
    ~VfioKvmDevice();
    VfioKvmDevice(const VfioKvmDevice&) = delete;
    VfioKvmDevice& operator=(const VfioKvmDevice&) = delete;

    // KVM_DEV_VFIO_GROUP_ADD; the group must stay open until this object is destroyed.
    void add_group(int group_fd);

private:
    UniqueFd device_;
    std::vector<int> groups_;
};

}  // namespace vmm::kvm
