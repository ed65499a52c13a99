#include "vmm/cli.hpp"
#include "vmm/sandbox/request.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "tests/support/cli_args.hpp"

namespace {

using test_support::exit_of;
vmm::cli::Command parse(std::vector<const char*> args) { return test_support::parse_words(std::move(args)); }

vmm::VmConfig run_config(std::vector<const char*> args) {
    auto command = parse(std::move(args));
    auto* run = std::get_if<vmm::cli::Run>(&command);
    if (!run) FAIL("expected a run command, got: " << std::get<vmm::cli::Exit>(command).err);
    return run->config;
}

}  // namespace

TEST_CASE("lkvm run takes kvmtool's flags into a VmConfig") {
    auto c = run_config({"run",      "-k",        "Image",      "-i",    "initrd", "-p",    "console=ttyS0 quiet",
                         "-c",       "2",         "-m",         "512",   "-d",     "a.img", "--disk",
                         "b.img,ro", "--console", "virtio",     "--rng", "--name", "vm1",   "--dump-dtb",
                         "out.dtb",  "--debug",   "--no-reboot"});
    CHECK(c.kernel == "Image");
    CHECK(c.initrd == "initrd");
    REQUIRE(c.params);
    CHECK(*c.params == "console=ttyS0 quiet");
    CHECK(c.cpus == 2);
    CHECK(c.mem_mib == 512);
    REQUIRE(c.disks.size() == 2);
    CHECK(c.disks[0].path == "a.img");
    CHECK_FALSE(c.disks[0].read_only);
    CHECK(c.disks[1].path == "b.img");
    CHECK(c.disks[1].read_only);
    CHECK(c.console == vmm::ConsoleKind::Virtio);
    CHECK(c.rng);
    CHECK(c.name == "vm1");
    CHECK(c.dump_dtb == "out.dtb");
    CHECK(c.debug);
    CHECK(c.no_reboot);
}

TEST_CASE("lkvm run defaults to one vCPU, 256 MiB, the serial console and no -p") {
    auto c = run_config({"run", "-k", "Image"});
    CHECK(c.cpus == 1);
    CHECK(c.mem_mib == 256);
    CHECK(c.console == vmm::ConsoleKind::Serial);
    CHECK_FALSE(c.params);
    CHECK(vmm::kernel_params(c) == "console=ttyS0 earlycon");
    c.console = vmm::ConsoleKind::Virtio;
    CHECK(vmm::kernel_params(c) == "console=hvc0 earlycon");
}

TEST_CASE("An empty -p with --nodefaults is an empty kernel command line") {
    auto c = run_config({"run", "-k", "Image", "--nodefaults", "-p", ""});
    REQUIRE(c.params);
    CHECK(vmm::kernel_params(c).empty());
}

TEST_CASE("Disks keep their command-line order when -d is repeated") {
    auto c = run_config({"run", "-k", "I", "-d", "1.img", "-d", "2.img", "-d", "3.img,ro"});
    REQUIRE(c.disks.size() == 3);
    CHECK(c.disks[0].path == "1.img");
    CHECK(c.disks[2].path == "3.img");
}

TEST_CASE("lkvm --help and lkvm run --help print usage and exit 0") {
    auto top = exit_of({"--help"});
    CHECK(top.code == 0);
    CHECK(top.out.find("run") != std::string::npos);
    auto run = exit_of({"run", "--help"});
    CHECK(run.code == 0);
    CHECK(run.out.find("--kernel") != std::string::npos);
    CHECK(run.out.find("--no-reboot") != std::string::npos);
}

TEST_CASE("lkvm version prints a version number") {
    auto e = exit_of({"version"});
    CHECK(e.code == 0);
    CHECK(e.out.find(vmm::cli::kVersion) != std::string::npos);
    CHECK(exit_of({"--version"}).code == 0);
}

TEST_CASE("Usage errors exit 2 with one line that names the problem") {
    auto check_usage = [](std::vector<const char*> args, const char* needle) {
        auto e = exit_of(std::move(args));
        CHECK(e.code == 2);
        CHECK(e.err.find(needle) != std::string::npos);
        CHECK(e.err.find('\n') == e.err.size() - 1);  // exactly one line
    };
    check_usage({"run", "-k", "I", "--bogus"}, "--bogus");
    check_usage({"run", "-k", "I", "-c", "two"}, "two");
    check_usage({"run", "-k", "I", "-m", "-5"}, "-5");
    check_usage({"run", "-k", "I", "--console", "hdmi"}, "hdmi");
    check_usage({"run", "-k", "I", "-d", "x.img,rx"}, "rx");
    check_usage({"run", "-k", "I", "-d", ",ro"}, "no file name");
    check_usage({"frobnicate"}, "frobnicate");
}

TEST_CASE("lkvm with no arguments prints usage and exits 2") {
    auto e = exit_of({});
    CHECK(e.code == 2);
    CHECK(e.err.find("run") != std::string::npos);
}

TEST_CASE("lkvm list/stop/stat/debug become control commands; a missing name is a usage error") {
    using K = vmm::ControlCommand::Kind;
    auto control = [](std::vector<const char*> args) {
        auto command = parse(std::move(args));
        auto* c = std::get_if<vmm::ControlCommand>(&command);
        if (!c) FAIL("expected a control command");
        return *c;
    };
    CHECK(control({"list"}) == vmm::ControlCommand{K::List, "", {}});
    CHECK(control({"stop", "vm1"}) == vmm::ControlCommand{K::Stop, "vm1", {}});
    CHECK(control({"stat", "vm1"}) == vmm::ControlCommand{K::Stat, "vm1", {}});
    CHECK(control({"debug", "vm1", "dump"}) == vmm::ControlCommand{K::Debug, "vm1", {"dump"}});
    CHECK(control({"debug", "vm1", "fault", "65537", "write", "0x1000"}) ==
          vmm::ControlCommand{K::Debug, "vm1", {"fault", "65537", "write", "0x1000"}});
    for (auto args : {std::vector<const char*>{"stat"}, {"stop"}, {"debug", "vm1"}, {"list", "extra"}}) {
        vmm::cli::Exit e = exit_of(args);
        CHECK(e.code == 2);
        CHECK(std::count(e.err.begin(), e.err.end(), '\n') == 1);
    }
    CHECK(exit_of({"stat"}).err.find("lkvm stat --help") != std::string::npos);
}

TEST_CASE("-n is kvmtool's --network, repeatable, one NIC each; --name names the guest") {
    auto c = run_config({"run", "-k", "Image", "-n", "mode=user,hostfwd=tcp:2222-22", "--network",
                         "mode=tap,tapif=tap0", "-n", "mode=none", "--name", "vm1"});
    CHECK(c.name == "vm1");
    REQUIRE(c.nets.size() == 3);
    CHECK(c.nets[0].mode == vmm::NetMode::User);
    REQUIRE(c.nets[0].hostfwd.size() == 1);
    CHECK(c.nets[0].hostfwd[0] == vmm::HostForward{.udp = false, .host_port = 2222, .guest_port = 22});
    CHECK(c.nets[1].mode == vmm::NetMode::Tap);
    CHECK(c.nets[1].tapif == "tap0");
    CHECK(c.nets[2].mode == vmm::NetMode::None);
}

TEST_CASE("-n host_loopback: on unless given for run, off unless given for sandbox") {
    CHECK(run_config({"run", "-k", "Image", "-n", "mode=user"}).nets[0].host_loopback.value_or(true));
    auto sandbox_nets = [](const char* spec) {
        auto command = parse({"sandbox", "-k", "Image", "-n", spec, "--", "true"});
        auto* request = std::get_if<vmm::sandbox::Request>(&command);
        REQUIRE(request != nullptr);
        return request->config.nets;
    };
    CHECK(sandbox_nets("mode=user")[0].host_loopback == false);
    CHECK(sandbox_nets("mode=user,host_loopback=on")[0].host_loopback == true);
}

TEST_CASE("-n without a mode is user mode; a bare -n too") {
    auto c = run_config({"run", "-k", "Image", "-n", "guest_mac=52:54:00:aa:bb:cc"});
    REQUIRE(c.nets.size() == 1);
    CHECK(c.nets[0].mode == vmm::NetMode::User);
    CHECK(c.nets[0].mac == std::array<std::uint8_t, 6>{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc});
    auto bare = run_config({"run", "-n", "-k", "Image"});
    REQUIRE(bare.nets.size() == 1);
    CHECK(bare.nets[0].mode == vmm::NetMode::User);
    CHECK(run_config({"run", "-k", "Image"}).nets.size() == 1);  // kvmtool's default NIC
}

TEST_CASE("A bad -n value is a usage error naming the parameter") {
    auto e = exit_of({"run", "-k", "Image", "-n", "mode=bridge"});
    CHECK(e.code == 2);
    CHECK(e.err.find("mode=bridge") != std::string::npos);
    e = exit_of({"run", "-k", "Image", "-n", "guest_mac=zz:00:00:00:00:00"});
    CHECK(e.code == 2);
    CHECK(e.err.find("guest_mac") != std::string::npos);
    // -n no longer takes a guest name.
    e = exit_of({"run", "-k", "Image", "-n", "vm1"});
    CHECK(e.code == 2);
    CHECK(e.err.find("-n/--network") != std::string::npos);
}
