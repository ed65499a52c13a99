// vmm/sandbox/session.hpp: the machine a sandbox boots, its private directory, the exit status.
#include "vmm/sandbox/session.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/support/temp_dir.hpp"
#include "tests/vmm/sandbox/cpio_reader.hpp"
#include "vmm/base/error.hpp"
#include "vmm/sandbox/exchange.hpp"

namespace {

namespace fs = std::filesystem;

using testsupport::TempDir;

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const vmm::ShareConfig* share(const vmm::VmConfig& c, std::string_view tag) {
    for (const auto& s : c.shares)
        if (s.tag == tag) return &s;
    return nullptr;
}

}  // namespace

TEST_CASE("guest_config: our init and consoles, the three shares after the user's, no reboot") {
    vmm::sandbox::Request request;
    request.config.kernel = "Image";
    request.config.mem_mib = 512;
    request.config.shares.push_back({"/srv", "data", true});
    auto c = vmm::sandbox::guest_config(request, "/home/w", "/tmp/x/control", "/tmp/x/initrd");
    CHECK(c.kernel == "Image");
    CHECK(c.mem_mib == 512);
    REQUIRE(c.params);
    CHECK(*c.params == vmm::sandbox::kBaseParams);
    CHECK(c.params->find("rdinit=/lkvm-init") != std::string::npos);
    CHECK(c.initrd == "/tmp/x/initrd");
    CHECK(c.console == vmm::ConsoleKind::Virtio);
    CHECK(c.serial_to_stderr);
    CHECK(c.no_reboot);
    REQUIRE(c.shares.size() == 4);
    CHECK(c.shares[0].tag == "data");
    REQUIRE(share(c, vmm::sandbox::kRootTag));
    CHECK(share(c, vmm::sandbox::kRootTag)->dir == "/");
    CHECK(share(c, vmm::sandbox::kRootTag)->read_only);
    CHECK(share(c, vmm::sandbox::kRootTag)->one_file_system);  // never the host's /proc, /sys, /dev, /run
    REQUIRE(share(c, vmm::sandbox::kWorkTag));
    CHECK(share(c, vmm::sandbox::kWorkTag)->dir == "/home/w");
    CHECK(!share(c, vmm::sandbox::kWorkTag)->read_only);
    CHECK(!c.interactive);  // the terminal is left alone: Ctrl-C is SIGINT
    const vmm::ShareConfig* control = share(c, vmm::sandbox::kControlTag);
    REQUIRE(control);
    CHECK(control->dir == "/tmp/x/control");
    // Read-only but for the status file and its 16 bytes; one attach (our init's).
    CHECK(control->read_only);
    CHECK(control->writable_file == vmm::sandbox::kStatusFile);
    CHECK(control->writable_limit == vmm::sandbox::kMaxStatusBytes);
    CHECK(control->max_attaches == 1);
    for (const vmm::ShareConfig* other : {share(c, vmm::sandbox::kRootTag), share(c, vmm::sandbox::kWorkTag)}) {
        CHECK(other->writable_file.empty());
        CHECK(other->max_attaches == 0);
    }

    request.config.params = "debug initcall_debug";
    c = vmm::sandbox::guest_config(request, "/home/w", "/c", "/i");
    CHECK(*c.params == std::string(vmm::sandbox::kBaseParams) + " debug initcall_debug");
}

TEST_CASE("exit_status: lkvm's own outcome comes first; only a power-off reports the guest's status") {
    using vmm::sandbox::VmEnd;
    using How = VmEnd::How;
    const auto status = [](VmEnd end, std::optional<int> reported) {
        return vmm::sandbox::exit_status(end, reported).status;
    };
    // A clean power-off: CMD's status as the init reported it; none reported is 125.
    CHECK(status({How::PowerOff, 0}, 7) == 7);
    CHECK(status({How::PowerOff, 0}, 0) == 0);
    CHECK(status({How::PowerOff, 0}, 137) == 137);
    CHECK(status({How::PowerOff, 0}, std::nullopt) == 125);
    CHECK(vmm::sandbox::exit_status({How::PowerOff, 0}, std::nullopt).message.find("without reporting") !=
          std::string::npos);
    CHECK(vmm::sandbox::exit_status({How::PowerOff, 0}, 0).message.empty());
    // Whatever the guest wrote, even 0 early: SIGTERM is 143, Ctrl-C 130; a reset, crash or VMM
    // error 125, with a line saying the reported status is ignored.
    for (std::optional<int> reported : {std::optional<int>(0), std::optional<int>(3), std::optional<int>()}) {
        CAPTURE(reported.value_or(-1));
        CHECK(status({How::Signal, 15}, reported) == 143);
        CHECK(status({How::Signal, 2}, reported) == 130);
        CHECK(status({How::Reset, 0}, reported) == 125);
        CHECK(status({How::Crash, 0}, reported) == 125);
        CHECK(status({How::Error, 0}, reported) == 125);
        CHECK(status(VmEnd{}, reported) == 125);  // no run ended: a setup failure
        CHECK(vmm::sandbox::exit_status({How::Reset, 0}, reported).message.find("reset") != std::string::npos);
        CHECK((vmm::sandbox::exit_status({How::Crash, 0}, reported).message.find("ignored") != std::string::npos) ==
              reported.has_value());
    }
}

TEST_CASE("Session: command file, initrd = user's + padding + our init, status read back, directory removed") {
    TempDir work;
    const std::string user_initrd = work.path + "/user.cpio";
    std::ofstream(user_initrd, std::ios::binary) << "USER!";  // 5 bytes: 3 bytes of padding follow
    vmm::sandbox::Request request;
    request.config.kernel = "Image";
    request.config.initrd = user_initrd;
    request.workdir = work.path + "/./";
    request.argv = {"sh", "-c", "exit 7"};

    const std::string init = work.path + "/fake-lkvm";
    std::ofstream(init, std::ios::binary) << std::string(100000, '\x7f') << "ELF\xff\x80";

    std::string private_dir;
    {
        vmm::sandbox::Session session(request, init);
        const vmm::VmConfig& c = session.config();
        REQUIRE(share(c, vmm::sandbox::kWorkTag));
        CHECK(share(c, vmm::sandbox::kWorkTag)->dir == fs::canonical(work.path).string());
        REQUIRE(share(c, vmm::sandbox::kControlTag));
        const std::string control = share(c, vmm::sandbox::kControlTag)->dir;
        private_dir = fs::path(control).parent_path().string();
        CHECK(fs::path(c.initrd).parent_path().string() == private_dir);
        struct stat st {};
        REQUIRE(::stat(private_dir.c_str(), &st) == 0);
        CHECK((st.st_mode & 077) == 0);  // mkdtemp: the owner's alone

        auto command = vmm::sandbox::decode_command(read_text(control + "/command"));
        REQUIRE(command);
        CHECK(command->workdir == fs::canonical(work.path).string());
        CHECK(command->argv == request.argv);

        const std::string initrd = read_text(c.initrd);
        REQUIRE(initrd.size() > 8);
        CHECK(initrd.substr(0, 8) == std::string("USER!\0\0\0", 8));
        const std::vector<std::uint8_t> bytes(initrd.begin(), initrd.end());
        std::size_t end = 0;
        auto entries = test_cpio::read(bytes, 8, &end);
        REQUIRE(entries);
        CHECK(end == bytes.size());
        const auto lkvm_init =
            std::find_if(entries->begin(), entries->end(), [](auto& e) { return e.name == "lkvm-init"; });
        REQUIRE(lkvm_init != entries->end());
        CHECK((std::string(lkvm_init->data.begin(), lkvm_init->data.end()) ==
               read_text(init)));  // no 100 kB operands printed

        CHECK(fs::is_regular_file(control + "/status"));  // made by lkvm, empty: the one file the guest may write
        CHECK(fs::file_size(control + "/status") == 0);
        CHECK(!session.reported_status());
        std::ofstream(control + "/status") << "7\n";
        CHECK(session.reported_status() == 7);
        std::ofstream(control + "/status") << "300\n";
        CHECK(!session.reported_status());
        fs::remove(control + "/status");
        std::ofstream(work.path + "/elsewhere") << "9\n";
        fs::create_symlink(work.path + "/elsewhere", control + "/status");  // never followed
        CHECK(!session.reported_status());
    }
    CHECK(!fs::exists(private_dir));
}

TEST_CASE("Session: a bad --workdir or -i is one error naming the flag, and leaves nothing behind") {
    TempDir work;
    vmm::sandbox::Request request;
    request.config.kernel = "Image";
    request.argv = {"true"};
    request.workdir = work.path + "/missing";
    CHECK_THROWS_WITH_AS(vmm::sandbox::Session{request}, doctest::Contains("--workdir"), vmm::SetupError);
    std::ofstream(work.path + "/file") << "x";
    request.workdir = work.path + "/file";
    CHECK_THROWS_WITH_AS(vmm::sandbox::Session{request}, doctest::Contains("not a directory"), vmm::SetupError);

    const std::string tmpdir = work.path + "/tmp";
    fs::create_directory(tmpdir);
    ::setenv("TMPDIR", tmpdir.c_str(), 1);
    request.workdir = work.path;
    request.config.initrd = work.path + "/no-initrd";
    CHECK_THROWS_WITH_AS(vmm::sandbox::Session{request}, doctest::Contains("-i/--initrd"), vmm::SetupError);
    ::unsetenv("TMPDIR");
    CHECK(fs::is_empty(tmpdir));
}
