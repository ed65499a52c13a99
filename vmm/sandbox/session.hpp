// The host side of `lkvm sandbox`: a private temporary directory holding the initrd with lkvm's
// own init appended and the control share (the command in, CMD's status out), the VmConfig that
// boots it, and the exit status from what the guest reported. The directory goes with the object.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/config.hpp"
#include "vmm/sandbox/request.hpp"

namespace vmm::sandbox {

// The kernel command line before the user's -p: the UART is the kernel's console (lkvm's stderr),
// quiet below errors; a panic reboots at once (lkvm ends: no_reboot); the kernel runs our init.
inline constexpr const char* kBaseParams = "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/lkvm-init";

// The cpio archive that carries `init` (lkvm's own binary) as /lkvm-init, with /dev/console for
// an initrd that has none (the kernel opens it as init's stdio).
std::vector<std::uint8_t> init_archive(std::span<const std::uint8_t> init);

// The machine that runs `request`: its run flags plus the three shares, the consoles routed
// (virtio-console -> stdout, UART -> stderr), no reboot, and `initrd` (the assembled one).
VmConfig guest_config(const Request& request, const std::string& workdir, const std::string& control_dir,
                      const std::string& initrd);

// How lkvm's VM ended, as lkvm itself saw it: never anything the guest wrote.
struct VmEnd {
    enum class How {
        PowerOff,  // the guest powered off (PSCI SYSTEM_OFF): our init after CMD, or CMD itself
        Reset,     // the guest reset: a kernel panic (panic=-1) or CMD rebooting it
        Crash,     // lkvm ended the guest (an unrecoverable vCPU state)
        Signal,    // lkvm was stopped by `signal` (Ctrl-C, SIGTERM, `lkvm stop`)
        Error,     // lkvm failed: setup, configuration, or the VMM while running
    };
    How how = How::Error;
    int signal = 0;
};

struct SandboxExit {
    int status;
    std::string message;  // one line for stderr (without "lkvm: "), or empty
};

// lkvm sandbox's exit status. lkvm's own outcome comes first: a signal is 128+N, a reset, crash
// or error 125, whatever the guest reported; only a power-off reports the guest's status (125
// without one). The guest's init writes a status only after CMD ended.
SandboxExit exit_status(const VmEnd& end, std::optional<int> reported);

class Session {
public:
    // Checks --workdir, creates the directory (in $TMPDIR, else /tmp), writes the command and
    // the initrd with `init` (lkvm's own binary; tests pass a small file) as /lkvm-init. Throws
    // SetupError naming the flag or the step.
    explicit Session(const Request& request, const std::string& init = "/proc/self/exe");
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    const VmConfig& config() const { return config_; }
    // What the guest reported (nullopt when it wrote nothing valid).
    std::optional<int> reported_status() const;

private:
    // Logs what could not be removed (the rest is gone).
    void remove_private_dir() const;

    std::string dir_;  // the private directory: initrd, and control/ (the share)
    VmConfig config_;
};

}  // namespace vmm::sandbox
