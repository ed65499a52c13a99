// A KVM VM: memory slots, vCPU creation, in-kernel devices (vGIC), wired interrupts.
// Documentation/virt/kvm/api.rst (KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU, KVM_CREATE_DEVICE,
// KVM_IRQ_LINE on arm64, KVM_ARM_PREFERRED_TARGET).
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/address.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/cpu_features.hpp"
#include "vmm/kvm/vcpu.hpp"

namespace vmm::kvm {

// Called from the building thread, then from vCPU and event-loop threads for set_irq_line (the
// ioctl is thread-safe).
class Vm {
public:
    Vm(UniqueFd fd, std::size_t run_size) : fd_(std::move(fd)), run_size_(run_size) {}

    int fd() const { return fd_.get(); }
    int check_extension(long capability) const;

    // Backs [guest, guest + size) with host memory at `host` (KVM_SET_USER_MEMORY_REGION).
    void add_memory(std::uint32_t slot, GuestRange guest, void* host);

    // vCPU `index` with PSCI 0.2+ and `features` (vmm/cpu_features.hpp), SVE finalized; all but
    // vCPU 0 start powered off (the guest starts them with PSCI CPU_ON). The PMU still needs
    // Vcpu::init_pmu once the vGIC is initialized.
    Vcpu create_vcpu(unsigned index, const CpuFeatures& features);

    // An in-kernel device (KVM_CREATE_DEVICE); `what` names it in errors.
    UniqueFd create_device(std::uint32_t type, const std::string& what);

    // Drives the level of SPI `spi` (0-based; INTID 32 + spi).
    void set_irq_line(std::uint32_t spi, bool level) const;

private:
    UniqueFd fd_;
    std::size_t run_size_;
};

// KVM_SET_DEVICE_ATTR on a device fd; throws SetupError naming `what`.
void set_device_attr(int device_fd, std::uint32_t group, std::uint64_t attr, const void* value,
                     const std::string& what);

}  // namespace vmm::kvm
