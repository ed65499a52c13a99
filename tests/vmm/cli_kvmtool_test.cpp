// kvmtool's everyday command lines: the default kernel command line, -m sizes, the default NIC,
// kvmtool's -n parameters, kvm_9p, the control commands' -n NAME, and kvmtool-only flags.
#include "vmm/cli.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/cli_args.hpp"
#include "vmm/sandbox/session.hpp"

namespace {

using test_support::exit_of;
vmm::cli::Command parse(std::vector<const char*> args) { return test_support::parse_words(std::move(args)); }

vmm::VmConfig run_config(std::vector<const char*> args) {
    args.insert(args.begin(), {"run", "-k", "Image"});
    auto command = parse(std::move(args));
    auto* run = std::get_if<vmm::cli::Run>(&command);
    if (!run) FAIL("expected a run command, got: " << std::get<vmm::cli::Exit>(command).err);
    return run->config;
}

vmm::ControlCommand control_of(std::vector<const char*> args) {
    auto command = parse(std::move(args));
    auto* control = std::get_if<vmm::ControlCommand>(&command);
    if (!control) FAIL("expected a control command, got: " << std::get<vmm::cli::Exit>(command).err);
    return *control;
}

std::string params(std::vector<const char*> args) { return vmm::kernel_params(run_config(std::move(args))); }

bool one_line(const std::string& text) { return std::count(text.begin(), text.end(), '\n') == 1; }

}  // namespace

TEST_CASE("The default command line: the console, root=/dev/vda rw with a disk, then -p appended") {
    CHECK(params({}) == "console=ttyS0 earlycon");
    CHECK(params({"--console", "virtio"}) == "console=hvc0 earlycon");
    CHECK(params({"-d", "disk.img"}) == "console=ttyS0 earlycon root=/dev/vda rw");
    CHECK(params({"-d", "disk.img,ro", "-p", "quiet"}) == "console=ttyS0 earlycon root=/dev/vda rw quiet");
    CHECK(params({"-p", "quiet loglevel=3"}) == "console=ttyS0 earlycon quiet loglevel=3");
    // -p naming a root itself: lkvm adds none.
    CHECK(params({"-d", "disk.img", "-p", "root=/dev/vda1 ro"}) == "console=ttyS0 earlycon root=/dev/vda1 ro");
    CHECK(params({"-p", ""}) == "console=ttyS0 earlycon");
}

TEST_CASE("--rootfs DIR puts the 9p root words in the default command line, before -p") {
    CHECK(params({"--rootfs", "/srv/root", "-d", "disk.img", "-p", "quiet"}) ==
          "console=ttyS0 earlycon root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw quiet");
}

TEST_CASE("--nodefaults boots with -p alone") {
    CHECK(params({"--nodefaults", "-d", "disk.img", "-p", "console=ttyS0 root=/dev/vda2"}) ==
          "console=ttyS0 root=/dev/vda2");
    CHECK(params({"--nodefaults"}).empty());
}

TEST_CASE("The start line names the kernel, memory, vCPUs, name and the command line it boots") {
    auto c = run_config({"-i", "initrd", "-d", "disk.img", "-m", "1G", "-c", "2", "--name", "vm1", "-p", "quiet"});
    CHECK(vmm::start_line(c) ==
          "# lkvm run -k Image -i initrd -m 1024 -c 2 --name vm1: kernel command line "
          "\"console=ttyS0 earlycon root=/dev/vda rw quiet\"");
}

TEST_CASE("-m takes MiB, or K/M/G/T suffixes, as kvmtool") {
    CHECK(run_config({"-m", "512"}).mem_mib == 512);
    CHECK(run_config({"-m", "512M"}).mem_mib == 512);
    CHECK(run_config({"--mem", "1G"}).mem_mib == 1024);
    CHECK(run_config({"-m", "2g"}).mem_mib == 2048);
    CHECK(run_config({"-m", "1T"}).mem_mib == 1024 * 1024);
    CHECK(run_config({"-m", "262144K"}).mem_mib == 256);
    for (const char* bad :
         {"1.5G", "-5", "G", "1GB", "12Q", "", "1536K", "99999999999999999999", "18014398509481984T"}) {
        auto e = exit_of({"run", "-k", "Image", "-m", bad});
        CHECK(e.code == 2);
        CHECK(e.err.find("-m/--mem") != std::string::npos);
        CHECK(one_line(e.err));
    }
}

TEST_CASE("memory_warning: one line when the guest's RAM exceeds what the host has available") {
    CHECK(vmm::memory_warning(1024, 4096).empty());
    CHECK(vmm::memory_warning(1024, 0).empty());  // unknown
    CHECK(vmm::memory_warning(8192, 4096).find("4096 MiB") != std::string::npos);
}

TEST_CASE("Without -n the guest gets one user-mode NIC; -n none and mode=none remove it") {
    auto c = run_config({});
    REQUIRE(c.nets.size() == 1);
    CHECK(c.nets[0].mode == vmm::NetMode::User);
    for (const char* none : {"none", "mode=none"}) {
        auto n = run_config({"-n", none});
        REQUIRE(n.nets.size() == 1);
        CHECK(n.nets[0].mode == vmm::NetMode::None);
    }
    CHECK(run_config({"-n", "tap"}).nets.at(0).mode == vmm::NetMode::Tap);
}

TEST_CASE("kvmtool's -n parameters: no-op values accepted, the others refused by name") {
    auto c = run_config({"-n", "mode=tap,tapif=tap0,script=none,downscript=none,vhost=0,mq=1,trans=mmio"});
    CHECK(c.nets.at(0).mode == vmm::NetMode::Tap);
    CHECK(c.nets.at(0).tapif == "tap0");
    for (auto [spec, word] :
         std::vector<std::pair<const char*, const char*>>{{"mode=tap,script=/etc/ifup", "script="},
                                                          {"mode=tap,downscript=/x", "downscript="},
                                                          {"mode=tap,vhost=1", "vhost="},
                                                          {"mq=4", "mq="},
                                                          {"trans=pci", "trans=pci"},
                                                          {"mode=tap,host_mac=02:00:00:00:00:01", "host_mac="}}) {
        auto e = exit_of({"run", "-k", "Image", "-n", spec});
        CHECK(e.code == 2);
        CHECK(e.err.find(word) != std::string::npos);
        CHECK(e.err.find("not supported") != std::string::npos);
        CHECK(one_line(e.err));
    }
}

TEST_CASE("-n fd=N is an already open tap (mode=tap implied)") {
    auto c = run_config({"-n", "fd=3"});
    CHECK(c.nets.at(0).mode == vmm::NetMode::Tap);
    CHECK(c.nets.at(0).tap_fd == 3);
    CHECK(run_config({"-n", "mode=tap,fd=7,guest_mac=02:00:00:00:00:02"}).nets.at(0).tap_fd == 7);
    for (const char* bad : {"fd=x", "fd=", "mode=user,fd=3", "mode=tap,tapif=tap0,fd=3", "fd=-1"}) {
        auto e = exit_of({"run", "-k", "Image", "-n", bad});
        CHECK(e.code == 2);
        CHECK(one_line(e.err));
    }
}

TEST_CASE("--9p DIR without a tag gets kvmtool's kvm_9p") {
    auto c = run_config({"--9p", "/srv/share"});
    REQUIRE(c.shares.size() == 1);
    CHECK(c.shares[0].tag == "kvm_9p");
    CHECK(run_config({"--9p", "/srv/share,ro"}).shares.at(0).tag == "kvm_9p");
    CHECK(run_config({"--9p", "/srv/share,mytag"}).shares.at(0).tag == "mytag");
}

TEST_CASE("-d DIR (also DIR,ro) is refused with a hint to --rootfs or --9p") {
    char dir[] = "/tmp/lkvm-cli-dir-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    for (bool ro : {false, true}) {
        vmm::VmConfig c;
        c.kernel = "Image";
        c.disks.push_back({dir, ro});
        const auto errors = vmm::validate(c, {});
        const bool hint = std::any_of(errors.begin(), errors.end(), [&](const std::string& e) {
            return e.find("is a directory") != std::string::npos &&
                   e.find("--rootfs " + std::string(dir)) != std::string::npos &&
                   e.find("--9p " + std::string(dir)) != std::string::npos;
        });
        CHECK(hint);
    }
    ::rmdir(dir);
}

TEST_CASE("kvmtool-only flags get one line saying lkvm does not have them and what to use") {
    for (const char* flag : {"--balloon", "--vsock=3", "--loglevel", "--irqchip=gicv3-its", "--firmware", "-f", "--vnc",
                             "--hugetlbfs", "--aarch32", "--virtio-transport", "--debug-mmio", "--no-dhcp"}) {
        auto e = exit_of({"run", "-k", "Image", flag, "x"});
        CHECK(e.code == 2);
        CHECK(e.err.find("lkvm does not have this kvmtool flag") != std::string::npos);
        CHECK(e.err.find("not expected") == std::string::npos);
        CHECK(one_line(e.err));
    }
    auto sandbox = exit_of({"sandbox", "-k", "Image", "--balloon", "--", "true"});
    CHECK(sandbox.code == 125);
    CHECK(sandbox.err.find("--balloon") != std::string::npos);
    // After the sandbox's `--` the words are CMD's.
    CHECK(std::holds_alternative<vmm::sandbox::Request>(parse({"sandbox", "-k", "Image", "--", "tool", "--balloon"})));
}

TEST_CASE("stop, stat and debug take -n NAME beside the positional name; stop --all") {
    CHECK(control_of({"stop", "-n", "vm1"}).name == "vm1");
    CHECK(control_of({"stop", "vm1"}).name == "vm1");
    auto all = control_of({"stop", "--all"});
    CHECK(all.all);
    CHECK(all.name.empty());
    CHECK(control_of({"stat", "-n", "vm1"}).kind == vmm::ControlCommand::Kind::Stat);
    CHECK(control_of({"stat", "--name", "vm1"}).name == "vm1");
    auto debug = control_of({"debug", "-n", "vm1", "fail-next", "blk0", "2"});
    CHECK(debug.name == "vm1");
    CHECK(debug.words == std::vector<std::string>{"fail-next", "blk0", "2"});
    auto positional = control_of({"debug", "vm1", "dump"});
    CHECK(positional.name == "vm1");
    CHECK(positional.words == std::vector<std::string>{"dump"});
    for (auto args : std::vector<std::vector<const char*>>{
             {"stop"}, {"stop", "vm1", "-n", "vm2"}, {"stop", "--all", "vm1"}, {"stat"}, {"debug", "-n", "vm1"}}) {
        auto e = exit_of(args);
        CHECK(e.code == 2);
        CHECK(one_line(e.err));
    }
}

TEST_CASE("lkvm help, lkvm help COMMAND") {
    auto top = exit_of({"help"});
    CHECK(top.code == 0);
    CHECK(top.out.find("sandbox") != std::string::npos);
    auto run = exit_of({"help", "run"});
    CHECK(run.code == 0);
    CHECK(run.out.find("--nodefaults") != std::string::npos);
    CHECK(exit_of({"help", "nope"}).code == 2);
}

TEST_CASE("--version and version print the version and the git commit") {
    for (const char* flag : {"--version", "version"}) {
        auto e = exit_of({flag});
        CHECK(e.code == 0);
        CHECK(e.out == vmm::cli::version_text());
        CHECK(e.out.find(std::string("(git ") + vmm::cli::git_commit() + ")") != std::string::npos);
    }
}

TEST_CASE("lkvm run takes the console keys; lkvm sandbox keeps Ctrl-C, its own command line and no default NIC") {
    CHECK(run_config({}).console_keys);
    auto command = parse({"sandbox", "-k", "Image", "-p", "debug", "--", "true"});
    auto* request = std::get_if<vmm::sandbox::Request>(&command);
    REQUIRE(request);
    CHECK_FALSE(request->config.console_keys);
    CHECK(request->config.nets.empty());
    const vmm::VmConfig guest = vmm::sandbox::guest_config(*request, "/w", "/c", "/i");
    CHECK(vmm::kernel_params(guest) == std::string(vmm::sandbox::kBaseParams) + " debug");
}
