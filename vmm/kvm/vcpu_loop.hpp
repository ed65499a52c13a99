// The body of a vCPU thread: KVM_RUN, decode the exit, dispatch MMIO to the bus behind an
// exception firewall, and return on the events that end (or reset) the VM.
#pragma once

#include <atomic>
#include <csignal>
#include <string>

#include "vmm/base/bus.hpp"
#include "vmm/kvm/vcpu.hpp"

namespace vmm::kvm {

struct VcpuStop {
    enum class Reason {
        Requested,  // stopping was set and the vCPU was kicked out of KVM_RUN
        Shutdown,   // PSCI SYSTEM_OFF
        Reset,      // PSCI SYSTEM_RESET
        Crash,      // KVM_SYSTEM_EVENT_CRASH
        Error,      // an exit lkvm cannot handle; `detail` says which
    };
    Reason reason;
    std::string detail;
};

// The signal that kicks a vCPU thread out of KVM_RUN (after Vcpu::request_exit()).
inline constexpr int kKickSignal = SIGUSR1;

// Installs a no-op handler for kKickSignal without SA_RESTART, so the signal interrupts KVM_RUN
// instead of killing the process. Process-wide and idempotent.
void install_kick_handler();

// Runs on the vCPU's own thread until the VM must stop.
VcpuStop run_vcpu(Vcpu& vcpu, MmioBus& bus, const std::atomic<bool>& stopping);

}  // namespace vmm::kvm
