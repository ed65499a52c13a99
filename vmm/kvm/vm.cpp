#include "vmm/kvm/vm.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm::kvm {

int Vm::check_extension(long capability) const {
    int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
    return r < 0 ? 0 : r;
}

void Vm::add_memory(std::uint32_t slot, GuestRange guest, void* host) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = guest.base().value;
    region.memory_size = guest.size();
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0)
        throw_errno("KVM_SET_USER_MEMORY_REGION for " + std::to_string(guest.size() >> 20) + " MiB of guest RAM");
}

Vcpu Vm::create_vcpu(unsigned index, const CpuFeatures& features) {
    UniqueFd fd(::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index)));
    if (!fd) throw_errno("KVM_CREATE_VCPU " + std::to_string(index));
    void* run = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (run == MAP_FAILED) throw_errno("mmap of vCPU " + std::to_string(index) + "'s kvm_run");
    MmapRegion run_region(run, run_size_);

    kvm_vcpu_init init{};
    if (::ioctl(fd_.get(), KVM_ARM_PREFERRED_TARGET, &init) != 0) throw_errno("KVM_ARM_PREFERRED_TARGET");
    init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
    if (index != 0) init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
    // KVM takes address and generic authentication only together.
    if (features.ptrauth) init.features[0] |= 1u << KVM_ARM_VCPU_PTRAUTH_ADDRESS | 1u << KVM_ARM_VCPU_PTRAUTH_GENERIC;
    if (features.sve) init.features[0] |= 1u << KVM_ARM_VCPU_SVE;
    if (features.pmu) init.features[0] |= 1u << KVM_ARM_VCPU_PMU_V3;
    if (::ioctl(fd.get(), KVM_ARM_VCPU_INIT, &init) != 0)
        throw_errno("KVM_ARM_VCPU_INIT for vCPU " + std::to_string(index));
    Vcpu vcpu(std::move(fd), std::move(run_region), index);
    if (features.sve) vcpu.finalize_sve(features.sve_max_vl);
    return vcpu;
}

UniqueFd Vm::create_device(std::uint32_t type, const std::string& what) {
    kvm_create_device device{};
    device.type = type;
    if (::ioctl(fd_.get(), KVM_CREATE_DEVICE, &device) != 0) throw_errno("KVM_CREATE_DEVICE (" + what + ")");
    return UniqueFd(static_cast<int>(device.fd));
}

void Vm::set_irq_line(std::uint32_t spi, bool level) const {
    kvm_irq_level irq{};
    irq.irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (32 + spi);
    irq.level = level ? 1 : 0;
    // Runs on device paths: a failure is logged, never thrown.
    if (::ioctl(fd_.get(), KVM_IRQ_LINE, &irq) != 0) {
        log_warn("KVM_IRQ_LINE for SPI %u: %s", spi, std::strerror(errno));
    }
}

void set_device_attr(int device_fd, std::uint32_t group, std::uint64_t attr, const void* value,
                     const std::string& what) {
    kvm_device_attr a{};
    a.group = group;
    a.attr = attr;
    a.addr = reinterpret_cast<std::uint64_t>(value);
    if (::ioctl(device_fd, KVM_SET_DEVICE_ATTR, &a) != 0) throw_errno(what);
}

}  // namespace vmm::kvm
