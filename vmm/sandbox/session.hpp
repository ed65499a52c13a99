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

// lkvm's exit status from the status the guest reported (if any) and run_vm's exit code.
int exit_status(std::optional<int> reported, int vm_exit_code);

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
    std::string dir_;          // the private directory: initrd, and control/ (the share)
    VmConfig config_;
};

}  // namespace vmm::sandbox
