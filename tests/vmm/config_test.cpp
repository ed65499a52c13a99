#include "vmm/config.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

struct TempFile {
    std::string path;
    explicit TempFile(const std::vector<std::uint8_t>& bytes, mode_t mode = 0644) {
        char name[] = "/tmp/lkvm-config-XXXXXX";
        int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
        ::fchmod(fd, mode);
        ::close(fd);
        path = name;
    }
    ~TempFile() { ::unlink(path.c_str()); }
};

std::vector<std::uint8_t> arm64_image() {
    std::vector<std::uint8_t> h(4096, 0);
    std::uint64_t image_size = 1 << 20;
    std::memcpy(&h[16], &image_size, 8);
    std::memcpy(&h[56], "ARM\x64", 4);
    return h;
}

const vmm::kvm::HostLimits kHost{8, 40};

bool mentions(const std::vector<std::string>& errors, const std::string& needle) {
    for (const auto& e : errors)
        if (e.find(needle) != std::string::npos) return true;
    return false;
}

std::string all(const std::vector<std::string>& errors) {
    std::string text;
    for (const auto& e : errors) text += e + "\n";
    return text;
}

}  // namespace

TEST_CASE("validate accepts a bootable configuration") {
    TempFile kernel(arm64_image());
    TempFile initrd({1, 2, 3});
    TempFile disk(std::vector<std::uint8_t>(4096));
    vmm::VmConfig c;
    c.kernel = kernel.path;
    c.initrd = initrd.path;
    c.disks = {{disk.path, false}};
    c.cpus = 2;
    c.mem_mib = 256;
    auto errors = vmm::validate(c, kHost);
    CHECK_MESSAGE(errors.empty(), all(errors));
}

TEST_CASE("validate names a missing or unreadable kernel, initrd and disk") {
    vmm::VmConfig c;
    c.kernel = "/nonexistent/Image";
    c.initrd = "/nonexistent/initrd";
    c.disks = {{"/nonexistent/disk.img", false}};
    auto errors = vmm::validate(c, kHost);
    CHECK(mentions(errors, "/nonexistent/Image"));
    CHECK(mentions(errors, "/nonexistent/initrd"));
    CHECK(mentions(errors, "/nonexistent/disk.img"));
}

TEST_CASE("validate rejects a kernel that is not an arm64 Image") {
    std::vector<std::uint8_t> elf(4096, 0);
    std::memcpy(elf.data(),
                "\x7f"
                "ELF",
                4);
    TempFile kernel(elf);
    vmm::VmConfig c;
    c.kernel = kernel.path;
    auto errors = vmm::validate(c, kHost);
    REQUIRE(errors.size() == 1);
    CHECK(mentions(errors, "not an arm64 Linux Image"));
    CHECK(mentions(errors, kernel.path));
}

TEST_CASE("validate rejects -m 0, -c 0 and sizes beyond what KVM allows") {
    TempFile kernel(arm64_image());
    vmm::VmConfig c;
    c.kernel = kernel.path;
    c.mem_mib = 0;
    c.cpus = 0;
    auto errors = vmm::validate(c, kHost);
    CHECK(mentions(errors, "-m/--mem 0"));
    CHECK(mentions(errors, "-c/--cpus 0"));

    c.mem_mib = 4096;  // needs 33 bits
    c.cpus = 9;
    errors = vmm::validate(c, vmm::kvm::HostLimits{8, 32});
    CHECK(mentions(errors, "KVM_CAP_ARM_VM_IPA_SIZE"));
    CHECK(mentions(errors, "use at most -m 2048"));
    CHECK(mentions(errors, "KVM_CAP_MAX_VCPUS"));

    c.mem_mib = ~0ull;
    c.cpus = 100000;
    errors = vmm::validate(c, kHost);
    CHECK(mentions(errors, "memory map holds at most"));
    CHECK(mentions(errors, "lkvm supports at most"));
}

TEST_CASE("validate tells the user to add ,ro when a disk cannot be opened read-write") {
    if (::geteuid() == 0) {
        MESSAGE("running as root: permission bits do not stop root; skipped");
        return;
    }
    TempFile kernel(arm64_image());
    TempFile disk(std::vector<std::uint8_t>(512), 0444);
    vmm::VmConfig c;
    c.kernel = kernel.path;
    c.disks = {{disk.path, false}};
    auto errors = vmm::validate(c, kHost);
    CHECK(mentions(errors, disk.path + ",ro"));
    c.disks[0].read_only = true;
    CHECK(vmm::validate(c, kHost).empty());
}

TEST_CASE("validate rejects the same disk twice, bad names and overlong command lines") {
    TempFile kernel(arm64_image());
    TempFile disk(std::vector<std::uint8_t>(512));
    vmm::VmConfig c;
    c.kernel = kernel.path;
    c.disks = {{disk.path, false}, {disk.path, true}};
    c.name = "bad name!";
    c.params = std::string(3000, 'x');
    auto errors = vmm::validate(c, kHost);
    CHECK(mentions(errors, "given twice"));
    CHECK(mentions(errors, "--name"));
    CHECK(mentions(errors, "-p/--params"));
}

// With /dev/kvm unusable, the first (and only) line is the KVM problem and its fix; the
// config errors (some only echoes of the missing host limits) are not shown.
TEST_CASE("startup_errors: a KVM problem alone, else every config error") {
    const std::vector<std::string> config_errors{"-k/--kernel: no kernel given",
                                                 "-c/--cpus 4: KVM on this host allows at most 0"};
    const std::string kvm =
        "cannot open /dev/kvm: Permission denied; run lkvm as root or add your user to the group owning /dev/kvm";
    CHECK(vmm::startup_errors(kvm, config_errors) == std::vector<std::string>{kvm});
    CHECK(vmm::startup_errors("", config_errors) == config_errors);
    CHECK(vmm::startup_errors("", {}).empty());
}

TEST_CASE("validate accepts --viommu tables=on with assigned PCI functions behind the vIOMMU (shadowed tables)") {
    TempFile kernel(arm64_image());
    vmm::VmConfig c;
    c.kernel = kernel.path;
    c.cpus = 1;
    c.mem_mib = 256;
    c.viommu = vmm::ViommuConfig{};
    c.viommu->tables = true;
    CHECK_MESSAGE(vmm::validate(c, kHost).empty(), all(vmm::validate(c, kHost)));  // no --vfio-pci: fine
    c.vfio_pci = {"0000:01:00.0"};
    for (const std::string& error : vmm::validate(c, kHost)) CHECK(error.find("tables") == std::string::npos);
    c.viommu->vfio = false;  // --viommu virtio,tables=on: the functions stay outside the vIOMMU
    for (const std::string& error : vmm::validate(c, kHost)) CHECK(error.find("tables") == std::string::npos);
}
