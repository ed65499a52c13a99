// lkvm's entry point: parse -> validate -> build -> run -> exit code. SetupError is caught once,
// here; a guest reset rebuilds the Machine from the same configuration (a cold reset).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <variant>

#include "vmm/base/descriptor_limit.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/event_loop.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/terminal.hpp"
#include "vmm/cli.hpp"
#include "vmm/control/commands.hpp"
#include "vmm/control/dir.hpp"
#include "vmm/control/server.hpp"
#include "vmm/exit_status.hpp"
#include "vmm/host_kernel.hpp"
#include "vmm/kvm/system.hpp"
#include "vmm/machine.hpp"
#include "vmm/sandbox/exchange.hpp"
#include "vmm/sandbox/guest_init.hpp"
#include "vmm/sandbox/session.hpp"

namespace {

using vmm::kExitFailure;
using vmm::kExitGuestCrash;
using vmm::kExitOk;
using vmm::kExitUsage;

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

// What lkvm sandbox needs to know of how the VM ended (vmm/sandbox/session.hpp).
vmm::sandbox::VmEnd vm_end(const vmm::RunResult& result) {
    using How = vmm::sandbox::VmEnd::How;
    switch (result.reason) {
        case vmm::RunResult::Reason::Shutdown: return {How::PowerOff, 0};
        case vmm::RunResult::Reason::Reset: return {How::Reset, 0};
        case vmm::RunResult::Reason::Crash: return {How::Crash, 0};
        case vmm::RunResult::Reason::Signal: return {How::Signal, result.signal};
        case vmm::RunResult::Reason::Error: break;
    }
    return {How::Error, 0};
}

// lkvm run's start line (as kvmtool prints one), once the machine is built: a setup error stays
// the one line it is, and a guest that then hangs was still announced.
void announce_start(const vmm::VmConfig& config) {
    std::fprintf(stderr, "%s\n", vmm::start_line(config).c_str());
    if (std::string warning = vmm::memory_warning(config.mem_mib, host_available_mib()); !warning.empty())
        std::fprintf(stderr, "lkvm: warning: %s\n", warning.c_str());
    for (const vmm::DiskConfig& disk : config.disks)
        vmm::log_debug("disk: %s%s", disk.path.c_str(), disk.read_only ? " (read-only)" : "");
    for (const vmm::ShareConfig& share : config.shares)
        vmm::log_debug("9p: %s as tag %s%s", share.dir.c_str(), share.tag.c_str(),
                       share.read_only ? " (read-only)" : "");
}

// `announce` (lkvm run): the start line, and a warning when the RAM is more than the host has.
// `end`, if given, learns how the guest's last run ended (left as is when none ran to its end).
int run_vm(vmm::VmConfig config, bool announce, vmm::sandbox::VmEnd* end = nullptr) {
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
    // Signals first (every thread inherits the mask), then the terminal, so the terminal is
    // restored before the signal mask on the way out.
    vmm::SignalFd signals;
    // Not interactive (lkvm sandbox): the terminal stays as it is, so Ctrl-C is SIGINT: 130.
    std::optional<vmm::Terminal> terminal;
    if (config.interactive)
        terminal.emplace(STDIN_FILENO,
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
            if (announce && boot == 1) announce_start(config);
            vmm::log_debug("%s: boot %u", config.name.c_str(), boot);
            result = machine.run(signals, control ? &*control : nullptr,
                                 config.console_keys && terminal && terminal->is_raw());
        }  // the Machine is gone: threads joined, fds closed, RAM unmapped
        if (end) *end = vm_end(result);
        switch (result.reason) {
            case RunResult::Reason::Shutdown: return kExitOk;
            case RunResult::Reason::Reset:
                if (config.no_reboot) return kExitOk;
                vmm::log_info("%s: guest reset; rebooting", config.name.c_str());
                continue;
            case RunResult::Reason::Crash:
                std::fprintf(stderr, "lkvm: %s: the guest crashed (%s)\n", config.name.c_str(), result.detail.c_str());
                return kExitGuestCrash;
            case RunResult::Reason::Signal:
                vmm::log_info("%s: stopped by signal %d", config.name.c_str(), result.signal);
                return vmm::kExitSignalBase + result.signal;
            case RunResult::Reason::Error:
                std::fprintf(stderr, "lkvm: error: %s: %s\n", config.name.c_str(), result.detail.c_str());
                return kExitFailure;
        }
    }
}

// Without -k: the host's own kernel on an arm64 host (vmm/host_kernel.hpp), said in one line;
// false (after one line naming -k) when there is none.
bool choose_kernel(vmm::VmConfig& config) {
    const vmm::KernelChoice choice = vmm::choose_host_kernel(config, vmm::HostSystem::running());
    if (!choice.line.empty()) std::fprintf(stderr, choice.ok ? "lkvm: %s\n" : "lkvm: error: %s\n", choice.line.c_str());
    return choice.ok;
}

// run_vm with its setup errors and any other exception reported: the exit statuses of run_vm.
int run_vm_reporting(vmm::VmConfig config, bool announce, vmm::sandbox::VmEnd* end = nullptr) {
    try {
        return run_vm(std::move(config), announce, end);
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

// `lkvm sandbox`: CMD's status as the guest reported it, unless lkvm's own outcome says otherwise
// (vmm/sandbox/session.hpp).
int run_sandbox(vmm::sandbox::Request request) {
    vmm::set_log_level(request.config.debug ? vmm::LogLevel::Debug : vmm::LogLevel::Warn);
    if (!choose_kernel(request.config)) return vmm::kExitSandboxFailed;
    try {
        vmm::sandbox::Session session(request);
        vmm::sandbox::VmEnd end;  // How::Error until a run ends
        run_vm_reporting(session.config(), false, &end);
        const vmm::sandbox::SandboxExit exit = vmm::sandbox::exit_status(end, session.reported_status());
        if (!exit.message.empty()) std::fprintf(stderr, "lkvm: %s\n", exit.message.c_str());
        return exit.status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lkvm: error: %s\n", e.what());
        return vmm::kExitSandboxFailed;
    }
}

}  // namespace

int main(int argc, char** argv) {
    // In a sandbox's guest this binary is PID 1 (vmm/sandbox/guest_init.hpp).
    if (vmm::sandbox::is_guest_init(argc, argv)) vmm::sandbox::run_guest_init();
    // Before anything is opened: the budget guests draw from (9p fids) is what the hard limit
    // allows beyond lkvm's reserve (vmm/base/descriptor_limit.hpp).
    vmm::raise_descriptor_limit();
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
    if (auto* sandbox = std::get_if<vmm::sandbox::Request>(&command)) return run_sandbox(std::move(*sandbox));
    vmm::VmConfig config = std::move(std::get<vmm::cli::Run>(command).config);
    vmm::set_log_level(config.debug ? vmm::LogLevel::Debug : vmm::LogLevel::Warn);
    if (!choose_kernel(config)) return kExitUsage;
    return run_vm_reporting(std::move(config), true);
}
