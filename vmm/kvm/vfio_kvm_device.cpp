#include "vmm/kvm/vfio_kvm_device.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm::kvm {

VfioKvmDevice::VfioKvmDevice(Vm& vm) {
    try {
        device_ = vm.create_device(KVM_DEV_TYPE_VFIO, "KVM-VFIO device");
    } catch (const SetupError& e) {
        log_debug("%s: assigned devices work without it", e.what());
    }
}

VfioKvmDevice::~VfioKvmDevice() {
    for (int fd : groups_) {
        std::int32_t value = fd;
        kvm_device_attr attr{};
        attr.group = KVM_DEV_VFIO_GROUP;
        attr.attr = KVM_DEV_VFIO_GROUP_DEL;
        attr.addr = reinterpret_cast<std::uint64_t>(&value);
        ::ioctl(device_.get(), KVM_SET_DEVICE_ATTR, &attr);
    }
}

void VfioKvmDevice::add_group(int group_fd) {
    if (!device_) return;
    const std::int32_t value = group_fd;
    set_device_attr(device_.get(), KVM_DEV_VFIO_GROUP, KVM_DEV_VFIO_GROUP_ADD, &value, "KVM-VFIO device: add group");
    groups_.push_back(group_fd);
}

}  // namespace vmm::kvm
