// The kernel lkvm boots when -k is not given: on an arm64 host, the host's own running kernel and
// its initrd, as Debian installs them (/boot/vmlinuz-RELEASE, /boot/initrd.img-RELEASE). That is
// what makes `lkvm sandbox -- make check` work with no flags on an arm64 CI runner.
#pragma once

#include <string>

#include "vmm/config.hpp"

namespace vmm {

struct HostSystem {
    std::string machine;  // uname -m: "aarch64" on arm64
    std::string release;  // uname -r
    static HostSystem running();
};

struct KernelChoice {
    bool ok = false;
    std::string line;  // ok: which kernel and initrd were chosen; else why none and to give -k
};

// With config.kernel empty: the host's kernel from `boot_dir` (and its initrd, unless -i gave
// one) when `host` is arm64 and both files are there and readable. Leaves `config` alone when
// -k was given (ok, no line) or nothing was found.
KernelChoice choose_host_kernel(VmConfig& config, const HostSystem& host, const std::string& boot_dir = "/boot");

}  // namespace vmm
