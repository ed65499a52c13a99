#include "vmm/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "vmm/base/address.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"
#include "vmm/kernel_loader.hpp"

namespace vmm {
namespace {

std::string quoted(const std::string& path) { return "'" + path + "'"; }

void check_kernel(const VmConfig& c, std::vector<std::string>& errors) {
    if (c.kernel.empty()) {
        errors.push_back("-k/--kernel: no kernel given; pass an arm64 Image with -k IMAGE");
        return;
    }
    try {
        BootFile::open(c.kernel, "-k/--kernel").image_header();
    } catch (const SetupError& e) {
        errors.push_back(e.what());
    }
}

void check_initrd(const VmConfig& c, std::vector<std::string>& errors) {
    if (c.initrd.empty()) return;
    try {
        if (BootFile::open(c.initrd, "-i/--initrd").size() == 0)
            errors.push_back("-i/--initrd " + quoted(c.initrd) + " is empty");
    } catch (const SetupError& e) {
        errors.push_back(e.what());
    }
}

void check_disks(const VmConfig& c, std::vector<std::string>& errors) {
    std::set<std::string> seen;
    for (const DiskConfig& d : c.disks) {
        if (d.path.empty()) {
            errors.push_back("-d/--disk: empty file name; use -d FILE or -d FILE,ro");
            continue;
        }
        if (!seen.insert(d.path).second)
            errors.push_back("-d/--disk " + quoted(d.path) + " is given twice; attach each disk image once");
        // kvmtool boots a directory given to -d over 9p; lkvm names that explicitly.
        struct stat st {};
        if (::stat(d.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
            errors.push_back("-d/--disk " + quoted(d.path) +
                             " is a directory, not a disk image; boot from it with --rootfs " + d.path +
                             " or share it with --9p " + d.path);
            continue;
        }
        int fd = ::open(d.path.c_str(), (d.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd >= 0) {
            ::close(fd);
            continue;
        }
        int err = errno;
        if (!d.read_only && (err == EACCES || err == EROFS || err == EPERM) && ::access(d.path.c_str(), R_OK) == 0)
            errors.push_back("-d/--disk " + quoted(d.path) + " cannot be opened read-write (" + std::strerror(err) +
                             "); attach it read-only with -d " + d.path + ",ro");
        else errors.push_back("-d/--disk " + quoted(d.path) + ": cannot open: " + std::strerror(err));
    }
}

void check_shares(const VmConfig& c, std::vector<std::string>& errors) {
    std::set<std::string> tags;
    for (const ShareConfig& share : c.shares) {
        const std::string flag = "--9p " + quoted(share.dir);
        struct stat st {};
        if (share.dir.empty()) errors.push_back("--9p: empty directory name; use --9p DIR[,TAG][,ro]");
        else if (::stat(share.dir.c_str(), &st) != 0)
            errors.push_back(flag + ": " + std::strerror(errno) + "; give an existing host directory");
        else if (!S_ISDIR(st.st_mode)) errors.push_back(flag + " is not a directory");
        else if (::access(share.dir.c_str(), R_OK | X_OK) != 0)
            errors.push_back(flag + ": not readable and searchable by lkvm (" + std::strerror(errno) + ")");
        else if (!share.read_only && ::access(share.dir.c_str(), W_OK) != 0)
            errors.push_back(flag + ": not writable by lkvm (" + std::strerror(errno) +
                             "); share it read-only with ,ro");
        if (share.tag.empty() || share.tag.size() > kMaxShareTag)
            errors.push_back(flag + ": the tag " + quoted(share.tag) + " must be 1 to " + std::to_string(kMaxShareTag) +
                             " bytes; give one with --9p DIR,TAG");
        else if (!tags.insert(share.tag).second)
            errors.push_back(flag + ": the tag " + quoted(share.tag) + " is used twice; give each share its own TAG");
    }
}

void check_memory(const VmConfig& c, const kvm::HostLimits& limits, std::vector<std::string>& errors) {
    const std::uint64_t max_layout_mib = layout::kMaxRamSize >> 20;
    if (c.mem_mib == 0) {
        errors.push_back("-m/--mem 0: the guest needs RAM; give its size, e.g. -m 256 (MiB) or -m 1G");
        return;
    }
    auto bytes = checked_mul(c.mem_mib, layout::kMiB);
    if (!bytes || *bytes > layout::kMaxRamSize) {
        errors.push_back("-m/--mem " + std::to_string(c.mem_mib) + ": lkvm's memory map holds at most " +
                         std::to_string(max_layout_mib) + " MiB of guest RAM");
        return;
    }
    if (limits.ipa_bits == 0) return;  // unknown host limits: checked when the VM is created
    unsigned need = layout::ipa_bits_for(*bytes, !c.vfio_pci.empty());
    if (need > limits.ipa_bits) {
        std::uint64_t max_mib = layout::max_ram_for_ipa(limits.ipa_bits) >> 20;
        errors.push_back("-m/--mem " + std::to_string(c.mem_mib) + " needs " + std::to_string(need) +
                         "-bit guest physical addresses, but KVM on this host allows " +
                         std::to_string(limits.ipa_bits) + " (KVM_CAP_ARM_VM_IPA_SIZE); use at most -m " +
                         std::to_string(max_mib));
    }
}

void check_cpus(const VmConfig& c, const kvm::HostLimits& limits, std::vector<std::string>& errors) {
    if (c.cpus == 0) {
        errors.push_back("-c/--cpus 0: the guest needs at least one vCPU, e.g. -c 1");
        return;
    }
    if (c.cpus > layout::kMaxVcpus)
        errors.push_back("-c/--cpus " + std::to_string(c.cpus) + ": lkvm supports at most " +
                         std::to_string(layout::kMaxVcpus) + " vCPUs");
    else if (limits.max_vcpus != 0 && c.cpus > limits.max_vcpus)
        errors.push_back("-c/--cpus " + std::to_string(c.cpus) + ": KVM on this host allows at most " +
                         std::to_string(limits.max_vcpus) + " vCPUs per VM (KVM_CAP_MAX_VCPUS); use -c " +
                         std::to_string(limits.max_vcpus) + " or fewer");
}

void check_name(const VmConfig& c, std::vector<std::string>& errors) {
    if (c.name.empty()) return;
    bool ok = c.name.size() <= 64 && std::all_of(c.name.begin(), c.name.end(), [](char ch) {
                  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                         ch == '-' || ch == '_' || ch == '.';
              });
    if (!ok) errors.push_back("--name " + quoted(c.name) + ": use up to 64 letters, digits, '-', '_' or '.'");
}

}  // namespace

std::string kernel_params(const VmConfig& config) {
    const std::string user = config.params.value_or("");
    if (config.nodefaults) return user;
    std::string params = config.console == ConsoleKind::Virtio ? "console=hvc0 earlycon" : "console=ttyS0 earlycon";
    const bool root_share = std::any_of(config.shares.begin(), config.shares.end(),
                                        [](const ShareConfig& s) { return s.tag == kRootShareTag; });
    // "root=" anywhere in -p (also "nfsroot=") means the user chose the root: add none.
    if (root_share) params += " root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw";
    else if (!config.disks.empty() && user.find("root=") == std::string::npos) params += " root=/dev/vda rw";
    if (!user.empty()) params += " " + user;
    return params;
}

std::string start_line(const VmConfig& config) {
    std::string line = "# lkvm run -k " + config.kernel;
    if (!config.initrd.empty()) line += " -i " + config.initrd;
    line += " -m " + std::to_string(config.mem_mib) + " -c " + std::to_string(config.cpus) + " --name " + config.name;
    return line + ": kernel command line \"" + kernel_params(config) + "\"";
}

std::string memory_warning(std::uint64_t guest_mib, std::uint64_t host_available_mib) {
    if (host_available_mib == 0 || guest_mib <= host_available_mib) return {};
    return "-m/--mem " + std::to_string(guest_mib) + ": the guest may use more RAM than the host has available (" +
           std::to_string(host_available_mib) + " MiB); the host will swap, or kill lkvm, if it does";
}

std::vector<std::string> startup_errors(const std::string& kvm_error, std::vector<std::string> config_errors) {
    if (!kvm_error.empty()) return {kvm_error};
    return config_errors;
}

std::vector<std::string> validate(const VmConfig& c, const kvm::HostLimits& limits) {
    std::vector<std::string> errors;
    check_kernel(c, errors);
    check_initrd(c, errors);
    check_disks(c, errors);
    check_shares(c, errors);
    check_memory(c, limits, errors);
    check_cpus(c, limits, errors);
    for (std::string& e : check_cpu_request(c.cpu, limits.cpu)) errors.push_back(std::move(e));
    check_name(c, errors);
    if (kernel_params(c).size() >= kMaxKernelParams)
        errors.push_back("-p/--params: the kernel command line is " + std::to_string(kernel_params(c).size()) +
                         " bytes; arm64 Linux accepts at most " + std::to_string(kMaxKernelParams - 1));
    if (c.viommu)
        for (std::string& e : check_viommu(*c.viommu)) errors.push_back(std::move(e));
    if (c.viommu && c.viommu->vfio && !c.viommu->virtio && c.vfio_pci.empty())
        errors.push_back("--viommu vfio: no assigned device to put behind it; add --vfio-pci BDF");
    for (std::string& e : check_networks(c.nets)) errors.push_back(std::move(e));
    const auto nics = static_cast<std::size_t>(
        std::count_if(c.nets.begin(), c.nets.end(), [](const NetConfig& n) { return n.mode != NetMode::None; }));
    std::size_t virtio_devices = c.disks.size() + c.shares.size() + nics + (c.rng ? 1 : 0) +
                                 (c.console == ConsoleKind::Virtio ? 1 : 0) + (c.viommu ? 1 : 0);
    if (virtio_devices > layout::kVirtioMmioSlots)
        errors.push_back("too many virtio devices (" + std::to_string(virtio_devices) + "); lkvm has " +
                         std::to_string(layout::kVirtioMmioSlots) + " virtio-mmio slots");
    return errors;
}

}  // namespace vmm
