#include "vmm/kvm/vcpu.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm::kvm {
namespace {

constexpr std::uint64_t core_reg(std::size_t offset) {
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset / sizeof(std::uint32_t));
}

constexpr std::uint64_t kMpidrEl1 = ARM64_SYS_REG(3, 0, 0, 0, 5);

kvm_run* run_struct(const MmapRegion& m) { return reinterpret_cast<kvm_run*>(m.data()); }

}  // namespace

void Vcpu::set_reg(std::uint64_t id, std::uint64_t value) {
    kvm_one_reg reg{id, reinterpret_cast<std::uint64_t>(&value)};
    if (::ioctl(fd_.get(), KVM_SET_ONE_REG, &reg) != 0)
        throw_errno("KVM_SET_ONE_REG on vCPU " + std::to_string(index_));
}

std::uint64_t Vcpu::get_reg(std::uint64_t id) const {
    std::uint64_t value = 0;
    kvm_one_reg reg{id, reinterpret_cast<std::uint64_t>(&value)};
    if (::ioctl(fd_.get(), KVM_GET_ONE_REG, &reg) != 0)
        throw_errno("KVM_GET_ONE_REG on vCPU " + std::to_string(index_));
    return value;
}

void Vcpu::set_pc(std::uint64_t value) { set_reg(core_reg(offsetof(kvm_regs, regs.pc)), value); }

void Vcpu::set_x(unsigned n, std::uint64_t value) {
    if (n > 30) throw SetupError("no register x" + std::to_string(n));
    set_reg(core_reg(offsetof(kvm_regs, regs.regs) + n * sizeof(std::uint64_t)), value);
}

std::uint64_t Vcpu::mpidr() const { return get_reg(kMpidrEl1); }

void Vcpu::finalize_sve(std::uint32_t max_vl) {
    static_assert(sizeof(SveVls) == KVM_ARM64_SVE_VLS_WORDS * sizeof(std::uint64_t));
    const std::string who = "vCPU " + std::to_string(index_);
    SveVls vls{};
    kvm_one_reg reg{KVM_REG_ARM64_SVE_VLS, reinterpret_cast<std::uint64_t>(vls.data())};
    if (::ioctl(fd_.get(), KVM_GET_ONE_REG, &reg) != 0) throw_errno("reading the SVE vector lengths of " + who);
    const std::vector<std::uint32_t> lengths = sve_lengths(vls);
    if (max_vl != 0) {
        std::optional<SveVls> limited = limit_sve_lengths(vls, max_vl);
        if (!limited) {
            std::string offered;
            for (std::uint32_t vl : lengths) offered += (offered.empty() ? "" : ", ") + std::to_string(vl);
            throw SetupError("--sve-max-vl " + std::to_string(max_vl) + ": this host's SVE vector lengths are " +
                             offered + " bits; pick one of them");
        }
        vls = *limited;
        // Written before finalization: KVM fixes the lengths then (KVM_REG_ARM64_SVE_VLS).
        if (::ioctl(fd_.get(), KVM_SET_ONE_REG, &reg) != 0) throw_errno("limiting the SVE vector lengths of " + who);
    }
    if (index_ == 0 && !lengths.empty())
        log_debug("SVE: the host offers %u to %u-bit vectors; the guest's longest is %u bits", lengths.front(),
                  lengths.back(), max_vl != 0 ? max_vl : lengths.back());
    int feature = KVM_ARM_VCPU_SVE;
    if (::ioctl(fd_.get(), KVM_ARM_VCPU_FINALIZE, &feature) != 0) throw_errno("KVM_ARM_VCPU_FINALIZE (SVE) of " + who);
}

void Vcpu::init_pmu(std::uint32_t ppi) {
    const std::string who = "vCPU " + std::to_string(index_);
    // KVM takes the interrupt as an INTID; every vCPU gets the same PPI.
    int intid = static_cast<int>(16 + ppi);
    kvm_device_attr attr{};
    attr.group = KVM_ARM_VCPU_PMU_V3_CTRL;
    attr.attr = KVM_ARM_VCPU_PMU_V3_IRQ;
    attr.addr = reinterpret_cast<std::uint64_t>(&intid);
    if (::ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &attr) != 0) throw_errno("setting the PMU interrupt of " + who);
    attr.attr = KVM_ARM_VCPU_PMU_V3_INIT;
    attr.addr = 0;
    if (::ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &attr) != 0) throw_errno("initializing the PMU of " + who);
}

void Vcpu::request_exit() {
    // kvm_run is shared with the kernel and written here by another thread than the vCPU's.
    __atomic_store_n(&run_struct(run_)->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

VcpuExit Vcpu::run() {
    if (::ioctl(fd_.get(), KVM_RUN, 0) != 0) {
        if (errno == EINTR || errno == EAGAIN) return Interrupted{};
        return Unhandled{std::string("KVM_RUN failed: ") + std::strerror(errno)};
    }
    kvm_run* r = run_struct(run_);
    switch (r->exit_reason) {
        case KVM_EXIT_MMIO: {
            std::uint32_t len = r->mmio.len;
            if (len == 0 || len > sizeof r->mmio.data) return Unhandled{"MMIO exit with length " + std::to_string(len)};
            GuestPhysAddr addr{r->mmio.phys_addr};
            if (r->mmio.is_write) return MmioWrite{addr, std::span<const std::uint8_t>(r->mmio.data, len)};
            return MmioRead{addr, std::span<std::uint8_t>(r->mmio.data, len)};
        }
        case KVM_EXIT_SYSTEM_EVENT: {
            std::uint32_t type = r->system_event.type;
            SystemEvent::Kind kind = type == KVM_SYSTEM_EVENT_SHUTDOWN ? SystemEvent::Kind::Shutdown
                                     : type == KVM_SYSTEM_EVENT_RESET  ? SystemEvent::Kind::Reset
                                     : type == KVM_SYSTEM_EVENT_CRASH  ? SystemEvent::Kind::Crash
                                                                       : SystemEvent::Kind::Other;
            return SystemEvent{kind, type};
        }
        case KVM_EXIT_INTR: return Interrupted{};
        case KVM_EXIT_FAIL_ENTRY:
            return Unhandled{"KVM_EXIT_FAIL_ENTRY (hardware reason " +
                             hex(r->fail_entry.hardware_entry_failure_reason) + ")"};
        case KVM_EXIT_INTERNAL_ERROR:
            return Unhandled{"KVM_EXIT_INTERNAL_ERROR (suberror " + std::to_string(r->internal.suberror) + ")"};
        case KVM_EXIT_ARM_NISV:
            // A data abort KVM could not decode (e.g. a load-pair to MMIO): the guest is broken.
            return Unhandled{"the guest accessed MMIO at " + hex(r->arm_nisv.fault_ipa) +
                             " with an instruction KVM cannot emulate"};
        default: return Unhandled{"unexpected KVM exit reason " + std::to_string(r->exit_reason)};
    }
}

}  // namespace vmm::kvm
