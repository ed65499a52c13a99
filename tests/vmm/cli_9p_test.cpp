// --9p DIR[,TAG][,ro]: parsing (vmm/cli.cpp) and validation (vmm/config.cpp).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "vmm/cli.hpp"
#include "vmm/config.hpp"

namespace {

vmm::cli::Command parse(std::vector<const char*> args) {
    args.insert(args.begin(), {"lkvm", "run", "-k", "Image"});
    return vmm::cli::parse(static_cast<int>(args.size()), args.data());
}

bool mentions(const std::vector<std::string>& errors, const std::string& needle) {
    for (const auto& e : errors)
        if (e.find(needle) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("--9p takes DIR, an optional TAG (default: kvmtool's kvm_9p) and ,ro; repeatable") {
    auto command = parse({"--9p", "/srv/share/", "--9p", "/tmp/x,hosttag,ro", "--9p", "data,rw"});
    auto* run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    const auto& shares = run->config.shares;
    REQUIRE(shares.size() == 3);
    CHECK(shares[0].dir == "/srv/share/");
    CHECK(shares[0].tag == "kvm_9p");
    CHECK(!shares[0].read_only);
    CHECK(shares[1].tag == "hosttag");
    CHECK(shares[1].read_only);
    CHECK(shares[2].tag == "kvm_9p");
    CHECK(!shares[2].read_only);
}

// Set-user-ID files only when asked for: a guest's set-user-ID file in a host directory is a way
// for any host user who can reach it to run the guest's code as its owner.
TEST_CASE("--9p DIR,TAG,suid lets the guest keep set-ID bits; without it they are refused") {
    auto command = parse({"--9p", "/tmp/x,t,suid", "--9p", "/tmp/y,u,ro", "--9p", "/tmp/z,suid"});
    auto* run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    const auto& shares = run->config.shares;
    REQUIRE(shares.size() == 3);
    CHECK(shares[0].allow_setid);
    CHECK(!shares[1].allow_setid);
    CHECK(shares[2].allow_setid);
    CHECK(shares[2].tag == "kvm_9p");   // no tag given: kvmtool's default
    CHECK(!shares[0].one_file_system);  // the sandbox's host root only
}

TEST_CASE("--9p usage errors are one line naming the flag") {
    for (auto spec : {",tag", "/tmp,a,b"}) {
        CAPTURE(spec);
        auto command = parse({"--9p", spec});
        auto* exit = std::get_if<vmm::cli::Exit>(&command);
        REQUIRE(exit);
        CHECK(exit->code == 2);
        CHECK(exit->err.find("--9p") != std::string::npos);
        CHECK(std::count(exit->err.begin(), exit->err.end(), '\n') == 1);
    }
}

TEST_CASE("validate: --9p needs an existing, readable directory and a unique tag that fits") {
    char tmpl[] = "/tmp/lkvm-9p-cli-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    vmm::VmConfig c;
    c.shares = {{dir, "a", false}};
    CHECK(!mentions(vmm::validate(c, {}), "--9p"));
    c.shares = {{dir + "/missing", "a", false}};
    CHECK(mentions(vmm::validate(c, {}), "No such file"));
    c.shares = {{"/etc/hostname", "a", false}};
    if (std::filesystem::exists("/etc/hostname")) CHECK(mentions(vmm::validate(c, {}), "is not a directory"));
    c.shares = {{dir, std::string(256, 't'), false}};
    CHECK(mentions(vmm::validate(c, {}), "must be 1 to 255 bytes"));
    c.shares = {{dir, "same", false}, {dir, "same", true}};
    CHECK(mentions(vmm::validate(c, {}), "used twice"));
    if (::geteuid() != 0) {
        ::chmod(dir.c_str(), 0);
        c.shares = {{dir, "a", true}};
        CHECK(mentions(vmm::validate(c, {}), "not readable"));
        ::chmod(dir.c_str(), 0700);
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("--rootfs DIR (or --9p DIR,/dev/root) boots from the share: root=/dev/root rootfstype=9p") {
    auto command = parse({"--rootfs", "/srv/root"});
    auto* run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    REQUIRE(run->config.shares.size() == 1);
    CHECK(run->config.shares[0].tag == "/dev/root");
    CHECK(vmm::kernel_params(run->config) ==
          "console=ttyS0 earlycon root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw");
    auto kvmtool = parse({"--9p", "/srv/root,/dev/root"});
    REQUIRE(std::get_if<vmm::cli::Run>(&kvmtool));
    CHECK(vmm::kernel_params(std::get<vmm::cli::Run>(kvmtool).config).find("rootfstype=9p") != std::string::npos);
    // -p is appended, as kvmtool does; --nodefaults takes it as given.
    auto own = parse({"--rootfs", "/srv/root", "-p", "init=/bin/sh"});
    CHECK(
        vmm::kernel_params(std::get<vmm::cli::Run>(own).config) ==
        "console=ttyS0 earlycon root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw init=/bin/sh");
    auto bare = parse({"--rootfs", "/srv/root", "--nodefaults", "-p", "console=ttyS0"});
    CHECK(vmm::kernel_params(std::get<vmm::cli::Run>(bare).config) == "console=ttyS0");
}
