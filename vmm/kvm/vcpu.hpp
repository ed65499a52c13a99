// One vCPU: its fd, its mmapped kvm_run, core/system registers, and KVM_RUN decoded into a
// VcpuExit variant, so this file is the only one that reads the kvm_run union.
// Documentation/virt/kvm/api.rst 4.10 (KVM_RUN), 5 (struct kvm_run), 4.68 (KVM_SET_ONE_REG).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "vmm/base/address.hpp"
#include "vmm/base/mmap_region.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/cpu_features.hpp"

namespace vmm::kvm {

// The guest read `data.size()` bytes at `addr`: fill `data` before the next run().
struct MmioRead {
    GuestPhysAddr addr;
    std::span<std::uint8_t> data;
};
struct MmioWrite {
    GuestPhysAddr addr;
    std::span<const std::uint8_t> data;
};
// PSCI SYSTEM_OFF / SYSTEM_RESET / a crash report (KVM_EXIT_SYSTEM_EVENT).
struct SystemEvent {
    enum class Kind { Shutdown, Reset, Crash, Other };
    Kind kind;
    std::uint32_t raw_type;
};
// KVM_RUN returned early because of a signal or immediate_exit (see request_exit()).
struct Interrupted {};
// Anything lkvm does not handle: the VM cannot continue.
struct Unhandled {
    std::string what;
};

using VcpuExit = std::variant<MmioRead, MmioWrite, SystemEvent, Interrupted, Unhandled>;

// run() is called only by the vCPU's own thread; request_exit() from any thread.
class Vcpu {
public:
    Vcpu(UniqueFd fd, MmapRegion run, unsigned index) : fd_(std::move(fd)), run_(std::move(run)), index_(index) {}

    unsigned index() const { return index_; }

    // Boot registers (booting.rst: x0 = DTB, x1..x3 = 0, pc = kernel entry).
    void set_pc(std::uint64_t value);
    void set_x(unsigned n, std::uint64_t value);
    // MPIDR_EL1, the CPU's affinity as the guest (and the DT's cpu reg) sees it.
    std::uint64_t mpidr() const;

    // After KVM_ARM_VCPU_INIT with SVE: caps the vector lengths at `max_vl` bits (0: KVM's
    // default, the host's longest) and finalizes SVE (KVM_ARM_VCPU_FINALIZE), which KVM_RUN
    // needs. Throws SetupError naming the lengths the host has when it lacks `max_vl`.
    void finalize_sve(std::uint32_t max_vl);
    // The PMUv3's overflow interrupt `ppi`, then its initialization; after the vGIC is initialized.
    void init_pmu(std::uint32_t ppi);

    VcpuExit run();
    // Makes the current or next KVM_RUN return Interrupted (kvm_run.immediate_exit); pair with
    // a signal to the vCPU's thread to cut short a KVM_RUN that is already sleeping.
    void request_exit();

private:
    void set_reg(std::uint64_t id, std::uint64_t value);
    std::uint64_t get_reg(std::uint64_t id) const;

    UniqueFd fd_;
    MmapRegion run_;
    unsigned index_;
};

}  // namespace vmm::kvm
