// vmm/host_kernel.hpp: -k's default on an arm64 host, against a fake /boot.
#include "vmm/host_kernel.hpp"

#include <doctest/doctest.h>

#include <fstream>

#include "tests/support/temp_dir.hpp"

namespace {

struct FakeBoot {  // a /boot with the files add() names
    testsupport::TempDir tmp{"lkvm-boot-test"};
    const std::string& dir = tmp.path;
    void add(const std::string& name) { std::ofstream(dir + "/" + name) << name; }
};

const vmm::HostSystem kArm64{"aarch64", "6.12.9-arm64"};

}  // namespace

TEST_CASE("host kernel: on arm64 without -k, /boot/vmlinuz-RELEASE with /boot/initrd.img-RELEASE, named in one line") {
    FakeBoot boot;
    boot.add("vmlinuz-6.12.9-arm64");
    boot.add("initrd.img-6.12.9-arm64");
    boot.add("vmlinuz-6.1.0-arm64");  // another installed kernel: not the running one
    vmm::VmConfig config;
    const vmm::KernelChoice choice = vmm::choose_host_kernel(config, kArm64, boot.dir);
    CHECK(choice.ok);
    CHECK(config.kernel == boot.dir + "/vmlinuz-6.12.9-arm64");
    CHECK(config.initrd == boot.dir + "/initrd.img-6.12.9-arm64");
    CHECK(choice.line.find(config.kernel) != std::string::npos);
    CHECK(choice.line.find(config.initrd) != std::string::npos);
    CHECK(choice.line.find('\n') == std::string::npos);
}

TEST_CASE("host kernel: -k given is kept as it is, with or without -i") {
    FakeBoot boot;
    boot.add("vmlinuz-6.12.9-arm64");
    boot.add("initrd.img-6.12.9-arm64");
    vmm::VmConfig config;
    config.kernel = "Image";
    vmm::KernelChoice choice = vmm::choose_host_kernel(config, kArm64, boot.dir);
    CHECK(choice.ok);
    CHECK(choice.line.empty());
    CHECK(config.kernel == "Image");
    CHECK(config.initrd.empty());  // no initrd is not replaced by the host's

    config = {};
    config.initrd = "mine.cpio";  // -i alone: the host's kernel with the user's initrd
    choice = vmm::choose_host_kernel(config, kArm64, boot.dir);
    CHECK(choice.ok);
    CHECK(config.kernel == boot.dir + "/vmlinuz-6.12.9-arm64");
    CHECK(config.initrd == "mine.cpio");
    CHECK(choice.line.find("-i mine.cpio") != std::string::npos);
}

TEST_CASE("host kernel: a missing kernel or initrd, or a host that is not arm64, is one line naming -k") {
    FakeBoot boot;
    auto refused = [&](const vmm::HostSystem& host, const char* needle) {
        vmm::VmConfig config;
        const vmm::KernelChoice choice = vmm::choose_host_kernel(config, host, boot.dir);
        CHECK(!choice.ok);
        CHECK(config.kernel.empty());
        CHECK(config.initrd.empty());
        CHECK(choice.line.find("-k/--kernel") != std::string::npos);
        CHECK(choice.line.find(needle) != std::string::npos);
        CHECK(choice.line.find('\n') == std::string::npos);
    };
    refused(kArm64, "vmlinuz-6.12.9-arm64 does not exist");
    boot.add("vmlinuz-6.12.9-arm64");
    refused(kArm64, "initrd.img-6.12.9-arm64 does not exist");
    boot.add("initrd.img-6.12.9-arm64");
    refused({"x86_64", "6.12.9-amd64"}, "x86_64");
    refused({"", ""}, "unknown");
}
