// lkvm's entry point: parse -> validate -> build -> run -> exit code. SetupError is caught once,
// here; a guest reset rebuilds the Machine from the same configuration (a cold reset).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <variant>

#include "vmm/cli.hpp"
#include "vmm/control/cli.hpp"
#include "vmm/control/dir.hpp"
#include "vmm/control/server.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/event_loop.hpp"
#include "vmm/kvm/system.hpp"
#include "vmm/base/log.hpp"
#include "vmm/machine.hpp"
#include "vmm/base/terminal.hpp"
#include "vmm/sandbox/guest_init.hpp"
#include "vmm/sandbox/protocol.hpp"
#include "vmm/sandbox/session.hpp"

namespace {

// Exit statuses: 0 guest powered off (or rebooted with --no-reboot, `lkvm stop`, Ctrl-A x at the
// console), 1 setup or VMM failure,
// 2 usage error, 3 guest crash, 128 + N killed by signal N (after an orderly teardown).
// `lkvm sandbox` exits with CMD's status instead (vmm/sandbox/protocol.hpp).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitGuestCrash = 3;

void write_dtb(const std::string& path, const std::vector<std::uint8_t>& dtb) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(dtb.data()), static_cast<std::streamsize>(dtb.size()));
    out.close();
    if (!out) throw vmm::SetupError("--dump-dtb: cannot write '" + path + "'");
}

// MemAvailable of /proc/meminfo in MiB; 0 when unknown.
std::uint64_t host_available_mib() {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0;
    std::string unit;
    while (meminfo >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib / 1024;
    return 0;
}

// `announce` (lkvm run): the start line, and a warning when the RAM is more than the host has.
int run_vm(vmm::VmConfig config, bool announce) {
    using vmm::RunResult;
    // Opening /dev/kvm first gives the host's limits to validate(); without KVM only the KVM
    // problem is reported (vmm::startup_errors).
    std::optional<vmm::kvm::System> kvm;
    std::string kvm_error;
    try {
        kvm.emplace(vmm::kvm::System::open());
    } catch (const vmm::SetupError& e) {
        kvm_error = e.what();
    }
    const std::vector<std::string> errors =
        vmm::startup_errors(kvm_error, vmm::validate(config, kvm ? kvm->limits() : vmm::kvm::HostLimits{}));
    for (const std::string& e : errors) std::fprintf(stderr, "lkvm: error: %s\n", e.c_str());
    if (!kvm) return kExitFailure;
    if (!errors.empty()) return kExitUsage;
    if (config.name.empty()) config.name = "guest-" + std::to_string(::getpid());
    if (announce && config.dump_dtb.empty()) {
        std::fprintf(stderr, "%s\n", vmm::start_line(config).c_str());
        if (std::string warning = vmm::memory_warning(config.mem_mib, host_available_mib()); !warning.empty())
            std::fprintf(stderr, "lkvm: warning: %s\n", warning.c_str());
        for (const vmm::DiskConfig& disk : config.disks)
            vmm::log_debug("disk: %s%s", disk.path.c_str(), disk.read_only ? " (read-only)" : "");
        for (const vmm::ShareConfig& share : config.shares)
            vmm::log_debug("9p: %s as tag %s%s", share.dir.c_str(), share.tag.c_str(), share.read_only ? " (read-only)" : "");
    }

    // Signals first (every thread inherits the mask), then the terminal, so the terminal is
    // restored before the signal mask on the way out.
    vmm::SignalFd signals;
    vmm::Terminal terminal(STDIN_FILENO,
                           config.console_keys ? vmm::Terminal::Keys::ToGuest : vmm::Terminal::Keys::CtrlCStops);
    // The control socket (lkvm list/stop/stat/debug) is claimed before anything is built, so a
    // name a live VM holds fails fast, and kept across guest reboots under the same name. After
    // the SignalFd: SIGINT/SIGTERM now end in an orderly return, which unlinks it.
    std::optional<vmm::ControlSocket> control;
    if (config.dump_dtb.empty()) control.emplace(vmm::control_dir_from_env(), config.name);
    for (unsigned boot = 1;; ++boot) {
        RunResult result;
        {
            vmm::Machine machine(config, *kvm);
            if (!config.dump_dtb.empty()) {
                write_dtb(config.dump_dtb, machine.dtb());
                vmm::log_info("device tree written to %s", config.dump_dtb.c_str());
                return kExitOk;
            }
            vmm::log_debug("%s: boot %u", config.name.c_str(), boot);
            result = machine.run(signals, control ? &*control : nullptr, config.console_keys && terminal.is_raw());
        }  // the Machine is gone: threads joined, fds closed, RAM unmapped
        switch (result.reason) {
            case RunResult::Reason::Shutdown:
                return kExitOk;
            case RunResult::Reason::Reset:
                if (config.no_reboot) return kExitOk;
                vmm::log_info("%s: guest reset; rebooting", config.name.c_str());
                continue;
            case RunResult::Reason::Crash:
                std::fprintf(stderr, "lkvm: %s: the guest crashed (%s)\n", config.name.c_str(), result.detail.c_str());
                return kExitGuestCrash;
            case RunResult::Reason::Signal:
                vmm::log_info("%s: stopped by signal %d", config.name.c_str(), result.signal);
                return 128 + result.signal;
            case RunResult::Reason::Error:
                std::fprintf(stderr, "lkvm: error: %s: %s\n", config.name.c_str(), result.detail.c_str());
                return kExitFailure;
        }
    }
}

// run_vm with its setup errors and any other exception reported: the exit statuses of run_vm.
int run_vm_reporting(vmm::VmConfig config, bool announce) {
    try {
        return run_vm(std::move(config), announce);
    } catch (const vmm::SetupError& e) {
        std::fprintf(stderr, "lkvm: error: %s\n", e.what());
        return kExitFailure;
    } catch (const std::exception& e) {
        // Not a setup error: a bug or the host running out of memory. Still unwind (the terminal
        // is restored) rather than let std::terminate skip the destructors.
        std::fprintf(stderr, "lkvm: internal error: %s\n", e.what());
        return kExitFailure;
    }
}

// `lkvm sandbox`: the status is CMD's as the guest reported it (vmm/sandbox/protocol.hpp).
int run_sandbox(const vmm::sandbox::Request& request) {
    vmm::set_log_level(request.config.debug ? vmm::LogLevel::Debug : vmm::LogLevel::Warn);
    try {
        vmm::sandbox::Session session(request);
        const int vm_exit = run_vm_reporting(session.config(), false);
        const std::optional<int> reported = session.reported_status();
        if (!reported && vm_exit == kExitOk)
            std::fprintf(stderr, "lkvm: sandbox: the guest ended without reporting the command's status; exit status %d\n",
                         vmm::sandbox::kStatusSandboxFailed);
        return vmm::sandbox::exit_status(reported, vm_exit);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lkvm: error: %s\n", e.what());
        return vmm::sandbox::kStatusSandboxFailed;
    }
}

}  // namespace

int main(int argc, char** argv) {
    // In a sandbox's guest this binary is PID 1 (vmm/sandbox/guest_init.hpp).
    if (vmm::sandbox::is_guest_init(argc, argv)) vmm::sandbox::run_guest_init();
    vmm::cli::Command command = vmm::cli::parse(argc, argv);
    if (auto* exit = std::get_if<vmm::cli::Exit>(&command)) {
        std::fputs(exit->out.c_str(), stdout);
        std::fputs(exit->err.c_str(), stderr);
        return exit->code;
    }
    if (auto* control = std::get_if<vmm::ControlCommand>(&command)) {
        try {
            vmm::ControlOutput output = vmm::run_control_command(*control, vmm::control_dir_from_env());
            std::fputs(output.out.c_str(), stdout);
            std::fputs(output.err.c_str(), stderr);
            return output.code;
        } catch (const vmm::SetupError& e) {
            std::fprintf(stderr, "lkvm: error: %s\n", e.what());
            return kExitFailure;
        }
    }
    if (auto* sandbox = std::get_if<vmm::sandbox::Request>(&command)) return run_sandbox(*sandbox);
    vmm::VmConfig config = std::move(std::get<vmm::cli::Run>(command).config);
    vmm::set_log_level(config.debug ? vmm::LogLevel::Debug : vmm::LogLevel::Warn);
    return run_vm_reporting(std::move(config), true);
}
