// VmConfig: what `lkvm run` was asked to build, as plain data (filled by vmm/cli.cpp), and the one
// place that checks it against the files and the host's KVM limits before anything is set up.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/cpu_features.hpp"
#include "vmm/kvm/system.hpp"
#include "vmm/net_config.hpp"
#include "vmm/viommu_config.hpp"

namespace vmm {

enum class ConsoleKind { Serial, Virtio };

struct DiskConfig {
    std::string path;
    bool read_only = false;
};

// --9p DIR[,TAG][,ro][,suid]: a host directory exported to the guest over virtio-9p.
struct ShareConfig {
    std::string dir;
    std::string tag;  // the guest's mount source; default: kDefaultShareTag
    bool read_only = false;
    // lkvm sandbox's control share (vmm/sandbox/session.hpp): with read_only, the one file in the
    // directory the guest may still write, and how many bytes of it; attaches granted (0: any).
    std::string writable_file{};  // (initialised so that {dir, tag, ro} stays warning-free)
    std::uint64_t writable_limit = 0;
    std::uint32_t max_attaches = 0;
    bool allow_setid = false;      // ,suid: the guest may make files set-user-ID / set-group-ID
    bool one_file_system = false;  // mount points below DIR are sealed (the sandbox's host root)
};

struct VmConfig {
    std::string kernel;
    std::string initrd;                 // empty: none
    std::optional<std::string> params;  // -p: appended to the default command line (kernel_params())
    bool nodefaults = false;            // --nodefaults: the command line is -p alone
    unsigned cpus = 1;
    CpuRequest cpu;  // --pmu, --sve-max-vl (vmm/cpu_features.hpp)
    std::uint64_t mem_mib = 256;
    std::vector<DiskConfig> disks;    // virtio-blk, in command-line order
    std::vector<ShareConfig> shares;  // virtio-9p, in command-line order (after the disks)
    std::vector<NetConfig> nets;      // -n/--network, in command-line order (mode=none: no device)
    ConsoleKind console = ConsoleKind::Serial;
    bool serial_to_stderr = false;  // the UART writes to lkvm's stderr (lkvm sandbox), else stdout
    bool rng = false;
    std::vector<std::string> vfio_pci;   // --vfio-pci BDF: host PCI functions assigned to the guest
    std::optional<ViommuConfig> viommu;  // --viommu; unset: no vIOMMU
    std::string name;                    // empty: main picks "guest-<pid>"
    std::string dump_dtb;                // non-empty: write the DTB there and exit
    bool debug = false;
    bool no_reboot = false;
    // False for lkvm sandbox (its guest's stdin is /dev/null): stdin is not read and the terminal
    // is left as it is, so Ctrl-C stays SIGINT, an orderly stop with status 130.
    bool interactive = true;
    // `lkvm run` on a terminal: Ctrl-C goes to the guest and Ctrl-A x ends lkvm
    // (vmm/base/console_keys.hpp). Off for `lkvm sandbox`, where Ctrl-C stops lkvm.
    bool console_keys = false;
};

// Every problem with `config`, each one line naming the flag and how to fix it; empty when the
// machine can be built. Opens (and closes) the kernel, initrd and disk files to check them.
std::vector<std::string> validate(const VmConfig& config, const kvm::HostLimits& limits);

// What `lkvm run` prints before it builds anything, one line each. When /dev/kvm is unusable,
// that line alone (it says how to fix it): the user acts on the first line, and the other errors
// may only be echoes of it (limits validate() could not read without KVM). Else every config error.
std::vector<std::string> startup_errors(const std::string& kvm_error, std::vector<std::string> config_errors);

// The kernel command line the guest gets, built as kvmtool builds it: a console on the chosen
// device; the root: `root=/dev/root` and the 9p words for a --rootfs share, else
// `root=/dev/vda rw` when there is a disk and -p names no root= itself; then -p appended.
// With --nodefaults: -p alone.
std::string kernel_params(const VmConfig& config);

// The line `lkvm run` prints at start, as kvmtool does, so that a guest that hangs early is
// never silent about what it booted: "# lkvm run -k IMAGE -m MIB -c N --name NAME: CMDLINE".
std::string start_line(const VmConfig& config);

// One warning line when the guest's RAM is more than the host has available (MemAvailable of
// /proc/meminfo, in MiB; 0: unknown), else empty. The guest may still run (RAM is only touched
// as the guest uses it), but the host will swap or kill it once it does.
std::string memory_warning(std::uint64_t guest_mib, std::uint64_t host_available_mib);

// The kernel's command line limit on arm64 (COMMAND_LINE_SIZE, including the NUL).
inline constexpr std::size_t kMaxKernelParams = 2048;

// The tag of a share the guest boots from (kvmtool's convention): it adds root=/dev/root ... to
// the default kernel command line.
inline constexpr std::string_view kRootShareTag = "/dev/root";

// The tag of a --9p DIR given without one: kvmtool's (the guest mounts it with
// `mount -t 9p -o trans=virtio kvm_9p /mnt`).
inline constexpr std::string_view kDefaultShareTag = "kvm_9p";

// Longest --9p tag (virtio::P9::kMaxTagLength: the config's tag, a mount source in the guest).
inline constexpr std::size_t kMaxShareTag = 255;

}  // namespace vmm
