#include "vmm/host_kernel.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace vmm {
namespace {

constexpr const char* kGiveKernel = "no kernel to boot: give one with -k/--kernel IMAGE";

// Empty when `path` can be read, else why not.
std::string unreadable(const std::string& path) {
    if (::access(path.c_str(), R_OK) == 0) return {};
    return path + (errno == ENOENT ? " does not exist" : std::string(" cannot be read: ") + std::strerror(errno));
}

}  // namespace

HostSystem HostSystem::running() {
    utsname uts{};
    if (::uname(&uts) != 0) return {};
    return {uts.machine, uts.release};
}

KernelChoice choose_host_kernel(VmConfig& config, const HostSystem& host, const std::string& boot_dir) {
    if (!config.kernel.empty()) return {true, ""};
    if (host.machine != "aarch64")
        return {false, std::string(kGiveKernel) +
                           " (the host's own kernel is the default on an arm64 host only; this one is " +
                           (host.machine.empty() ? "unknown" : host.machine) + ")"};
    const std::string kernel = boot_dir + "/vmlinuz-" + host.release;
    const bool default_initrd = config.initrd.empty();  // else -i's, checked with the rest later
    const std::string initrd = default_initrd ? boot_dir + "/initrd.img-" + host.release : config.initrd;
    for (const std::string& path : default_initrd ? std::vector{kernel, initrd} : std::vector{kernel})
        if (const std::string why = unreadable(path); !why.empty())
            return {false, std::string(kGiveKernel) + " (the default, the host's own kernel: " + why + ")"};
    config.kernel = kernel;
    config.initrd = initrd;
    return {true, "no -k given: booting the host's kernel " + kernel +
                      (default_initrd ? " with its initrd " : " with -i ") + initrd};
}

}  // namespace vmm
