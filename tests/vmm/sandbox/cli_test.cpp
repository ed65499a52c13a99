// `lkvm sandbox [run flags] [--workdir DIR] -- CMD [ARGS...]` (vmm/cli.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "vmm/cli.hpp"
#include "vmm/sandbox/exchange.hpp"

namespace {

vmm::cli::Command parse(std::vector<const char*> args) {
    args.insert(args.begin(), "lkvm");
    return vmm::cli::parse(static_cast<int>(args.size()), args.data());
}

vmm::sandbox::Request request_of(std::vector<const char*> args) {
    auto command = parse(std::move(args));
    auto* request = std::get_if<vmm::sandbox::Request>(&command);
    if (!request) FAIL("expected a sandbox request, got: " << std::get<vmm::cli::Exit>(command).err);
    return *request;
}

void check_one_line_error(std::vector<const char*> args, const std::string& needle) {
    auto command = parse(args);
    auto* exit = std::get_if<vmm::cli::Exit>(&command);
    REQUIRE(exit);
    CHECK(exit->code == vmm::kExitSandboxFailed);
    CHECK(exit->out.empty());
    CHECK(std::count(exit->err.begin(), exit->err.end(), '\n') == 1);
    CHECK(exit->err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("lkvm sandbox: the run flags before `--`, CMD and its arguments after it, untouched") {
    auto r = request_of({"sandbox", "-k", "Image",  "-i",   "initrd",       "-m",        "512",    "-c",
                         "2",       "-p", "debug",  "--9p", "/srv,data,ro", "--workdir", "/tmp/w", "--",
                         "sh",      "-c", "exit 7", "-k",   "--",           "--help"});
    CHECK(r.config.kernel == "Image");
    CHECK(r.config.initrd == "initrd");
    CHECK(r.config.mem_mib == 512);
    CHECK(r.config.cpus == 2);
    REQUIRE(r.config.params);
    CHECK(*r.config.params == "debug");
    REQUIRE(r.config.shares.size() == 1);
    CHECK(r.config.shares[0].tag == "data");
    CHECK(r.workdir == "/tmp/w");
    CHECK(r.argv == std::vector<std::string>{"sh", "-c", "exit 7", "-k", "--", "--help"});
}

TEST_CASE("lkvm sandbox: the working directory defaults to the current one") {
    auto r = request_of({"sandbox", "-k", "Image", "--", "true"});
    CHECK(r.workdir == ".");
    CHECK(!r.config.params);
    CHECK(r.argv == std::vector<std::string>{"true"});
}

TEST_CASE("lkvm sandbox without -k: no kernel yet (main picks the host's, vmm/host_kernel.hpp)") {
    auto r = request_of({"sandbox", "--", "sh", "-c", "exit 3"});
    CHECK(r.config.kernel.empty());
    CHECK(r.config.initrd.empty());
    CHECK(r.argv == std::vector<std::string>{"sh", "-c", "exit 3"});
}

TEST_CASE("lkvm sandbox usage errors: one line, status 125 (statuses below are CMD's)") {
    check_one_line_error({"sandbox", "-k", "Image"}, "after '--'");
    check_one_line_error({"sandbox", "-k", "Image", "true"}, "put CMD after '--'");  // CMD without `--`
    check_one_line_error({"sandbox", "-k", "Image", "--"}, "no command");
    check_one_line_error({"sandbox", "-k", "Image", "--bogus", "--", "true"}, "bogus");
    check_one_line_error({"sandbox", "-k", "Image", "--console", "serial", "--", "true"}, "--console");
    check_one_line_error({"sandbox", "-k", "Image", "--rootfs", "/srv", "--", "true"}, "--rootfs");
    check_one_line_error({"sandbox", "-k", "Image", "--no-reboot", "--", "true"}, "--no-reboot");
    check_one_line_error({"sandbox", "-k", "Image", "--dump-dtb", "x.dtb", "--", "true"}, "--dump-dtb");
    check_one_line_error({"sandbox", "-k", "Image", "--workdir", "", "--", "true"}, "--workdir");
    check_one_line_error({"sandbox", "-k", "Image", "-d", ",ro", "--", "true"}, "-d/--disk");
}

TEST_CASE("lkvm sandbox --help documents the exit statuses; lkvm run keeps status 2 for usage errors") {
    auto command = parse({"sandbox", "--help"});
    auto* exit = std::get_if<vmm::cli::Exit>(&command);
    REQUIRE(exit);
    CHECK(exit->code == 0);
    for (const char* needle : {"--workdir", "125", "126", "127", "128+N", "read-only"}) {
        CAPTURE(needle);
        CHECK(exit->out.find(needle) != std::string::npos);
    }
    for (const char* run_only : {"--console", "--rootfs", "--no-reboot", "--dump-dtb"}) {
        CAPTURE(run_only);
        CHECK(exit->out.find(run_only) == std::string::npos);
    }
    auto run = parse({"run", "-k", "Image", "--", "true"});
    REQUIRE(std::get_if<vmm::cli::Exit>(&run));
    CHECK(std::get<vmm::cli::Exit>(run).code == 2);
}
