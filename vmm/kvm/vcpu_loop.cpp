#include "vmm/kvm/vcpu_loop.hpp"

#include <pthread.h>

#include <cinttypes>
#include <cstring>
#include <exception>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm::kvm {
namespace {

void ignore_kick(int) {}

template <class... Ts>
struct Overloaded : Ts... {
    using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

void install_kick_handler() {
    struct sigaction action {};
    action.sa_handler = ignore_kick;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    if (::sigaction(kKickSignal, &action, nullptr) != 0) throw_errno("sigaction for the vCPU kick signal");
}

VcpuStop run_vcpu(Vcpu& vcpu, MmioBus& bus, const std::atomic<bool>& stopping) {
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, kKickSignal);
    ::pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);

    RateLimiter firewall_log(5);
    // Firewall: a device that throws is a bug in that device; the access completes as RAZ/WI and
    // the VM keeps running.
    auto guarded = [&](auto&& access, GuestPhysAddr addr, const char* kind) {
        try {
            access();
        } catch (const std::exception& e) {
            if (firewall_log.allow())
                log_error("vCPU %u: device failed on MMIO %s at 0x%" PRIx64 ": %s", vcpu.index(), kind, addr.value,
                          e.what());
        } catch (...) {
            if (firewall_log.allow())
                log_error("vCPU %u: device failed on MMIO %s at 0x%" PRIx64, vcpu.index(), kind, addr.value);
        }
    };

    for (;;) {
        if (stopping.load(std::memory_order_acquire)) return {VcpuStop::Reason::Requested, {}};
        VcpuExit exit = vcpu.run();
        std::optional<VcpuStop> stop = std::visit(
            Overloaded{
                [&](MmioRead& r) -> std::optional<VcpuStop> {
                    std::memset(r.data.data(), 0, r.data.size());
                    guarded([&] { bus.read(r.addr, r.data); }, r.addr, "read");
                    return std::nullopt;
                },
                [&](MmioWrite& w) -> std::optional<VcpuStop> {
                    guarded([&] { bus.write(w.addr, w.data); }, w.addr, "write");
                    return std::nullopt;
                },
                [&](SystemEvent& e) -> std::optional<VcpuStop> {
                    switch (e.kind) {
                        case SystemEvent::Kind::Shutdown: return VcpuStop{VcpuStop::Reason::Shutdown, {}};
                        case SystemEvent::Kind::Reset: return VcpuStop{VcpuStop::Reason::Reset, {}};
                        case SystemEvent::Kind::Crash:
                            return VcpuStop{VcpuStop::Reason::Crash, "the guest reported a crash"};
                        case SystemEvent::Kind::Other: break;
                    }
                    // WAKEUP/SUSPEND are only sent when lkvm enables them; ignore anything else.
                    log_debug("vCPU %u: ignoring system event %u", vcpu.index(), e.raw_type);
                    return std::nullopt;
                },
                [&](Interrupted&) -> std::optional<VcpuStop> { return std::nullopt; },
                [&](Unhandled& u) -> std::optional<VcpuStop> {
                    return VcpuStop{VcpuStop::Reason::Error, "vCPU " + std::to_string(vcpu.index()) + ": " + u.what};
                },
            },
            exit);
        if (stop) return *stop;
    }
}

}  // namespace vmm::kvm
