#include "vmm/kvm/system.hpp"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "vmm/base/error.hpp"

namespace vmm::kvm {
namespace {
constexpr const char* kDevice = "/dev/kvm";
constexpr unsigned kDefaultIpaBits = 40;  // what KVM gives a VM created with type 0
}  // namespace

System System::open() {
    UniqueFd fd(::open(kDevice, O_RDWR | O_CLOEXEC));
    if (!fd) {
        int err = errno;
        std::string how = err == EACCES || err == EPERM
                              ? "run lkvm as root or add your user to the group owning /dev/kvm (usually 'kvm')"
                              : "lkvm needs an arm64 host whose kernel runs KVM (booted at EL2 with "
                                "CONFIG_KVM; check 'dmesg | grep kvm'; in a VM, enable nested virtualization)";
        throw SetupError(std::string("cannot open ") + kDevice + ": " + std::strerror(err) + "; " + how);
    }
    int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        throw SetupError(std::string(kDevice) + " speaks KVM API " + std::to_string(version) + ", lkvm needs " +
                         std::to_string(KVM_API_VERSION));
    return System(std::move(fd));
}

int System::check_extension(long capability) const {
    int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
    return r < 0 ? 0 : r;
}

HostLimits System::limits() const {
    HostLimits limits;
    limits.max_vcpus = static_cast<unsigned>(check_extension(KVM_CAP_MAX_VCPUS));
    if (limits.max_vcpus == 0) limits.max_vcpus = static_cast<unsigned>(check_extension(KVM_CAP_NR_VCPUS));
    int ipa = check_extension(KVM_CAP_ARM_VM_IPA_SIZE);
    limits.ipa_bits = ipa > 0 ? static_cast<unsigned>(ipa) : kDefaultIpaBits;
    limits.cpu.probed = true;
    limits.cpu.ptrauth_address = check_extension(KVM_CAP_ARM_PTRAUTH_ADDRESS) > 0;
    limits.cpu.ptrauth_generic = check_extension(KVM_CAP_ARM_PTRAUTH_GENERIC) > 0;
    limits.cpu.sve = check_extension(KVM_CAP_ARM_SVE) > 0;
    limits.cpu.pmu_v3 = check_extension(KVM_CAP_ARM_PMU_V3) > 0;
    return limits;
}

Vm System::create_vm(unsigned ipa_bits) const {
    // Without KVM_CAP_ARM_VM_IPA_SIZE only type 0 (a fixed 40-bit IPA) exists.
    unsigned long type = check_extension(KVM_CAP_ARM_VM_IPA_SIZE) > 0 ? KVM_VM_TYPE_ARM_IPA_SIZE(ipa_bits) : 0;
    int vm;
    do {
        vm = ::ioctl(fd_.get(), KVM_CREATE_VM, type);
    } while (vm < 0 && errno == EINTR);
    if (vm < 0) throw_errno("KVM_CREATE_VM with a " + std::to_string(ipa_bits) + "-bit IPA space");
    int run_size = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0) throw_errno("KVM_GET_VCPU_MMAP_SIZE");
    return Vm(UniqueFd(vm), static_cast<std::size_t>(run_size));
}

}  // namespace vmm::kvm
