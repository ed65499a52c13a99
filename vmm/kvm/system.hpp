// /dev/kvm: the capability queries lkvm's validation needs and VM creation sized by IPA bits.
// Documentation/virt/kvm/api.rst 4.1-4.3 (KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION).
#pragma once

#include "vmm/base/unique_fd.hpp"
#include "vmm/cpu_features.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

// What the host's KVM allows (KVM_CAP_MAX_VCPUS, KVM_CAP_ARM_VM_IPA_SIZE) and offers the vCPUs,
// for vmm::validate.
struct HostLimits {
    unsigned max_vcpus = 0;
    unsigned ipa_bits = 0;
    CpuCaps cpu{};
};

class System {
public:
    // Throws SetupError that says how to get a usable /dev/kvm.
    static System open();

    int check_extension(long capability) const;
    // KVM_CAP_MAX_VCPUS, KVM_CAP_ARM_VM_IPA_SIZE (40 when the cap is absent: the fixed size) and
    // the vCPU feature capabilities.
    HostLimits limits() const;
    // A VM whose stage-2 covers `ipa_bits` of guest-physical address space.
    Vm create_vm(unsigned ipa_bits) const;

private:
    explicit System(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace vmm::kvm
