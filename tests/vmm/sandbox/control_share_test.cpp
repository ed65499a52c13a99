// The sandbox's control share as the guest meets it: the 9p server built from the share the
// session configures (options as vmm/machine.cpp passes them) takes one attach, lets the guest
// write the status file's first 16 bytes and nothing else.
#include <doctest/doctest.h>

#include <fcntl.h>

#include <filesystem>
#include <fstream>

#include "devices/p9/file_server.hpp"
#include "tests/devices/p9/p9_client.hpp"
#include "vmm/sandbox/exchange.hpp"
#include "vmm/sandbox/session.hpp"

using namespace p9test;
namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kRoot = 1, kStatus = 2, kCommand = 3;
constexpr std::uint32_t kAppend = 02000;  // P9_DOTL_APPEND

struct ControlShare {
    Scratch scratch;
    std::unique_ptr<vmm::sandbox::Session> session;
    std::unique_ptr<devices::p9::Server> server;
    std::string dir;

    ControlShare() {
        vmm::sandbox::Request request;
        request.config.kernel = "Image";
        request.workdir = scratch.base.string();
        request.argv = {"true"};
        const std::string init = (scratch.base / "fake-lkvm").string();
        std::ofstream(init) << "init";
        session = std::make_unique<vmm::sandbox::Session>(request, init);
        for (const vmm::ShareConfig& share : session->config().shares) {
            if (share.tag != vmm::sandbox::kControlTag) continue;
            devices::p9::ServerOptions options;
            options.read_only = share.read_only;
            options.writable_file = share.writable_file;
            options.writable_limit = share.writable_limit;
            options.max_attaches = share.max_attaches;
            server = devices::p9::Server::open(share.dir, options);
            dir = share.dir;
        }
        REQUIRE(server);
    }
};

}  // namespace

TEST_CASE("sandbox control share: one attach; the guest writes 16 status bytes and nothing else") {
    ControlShare share;
    Client guest(*share.server);
    REQUIRE(guest.version() == 0);
    REQUIRE(guest.attach(kRoot) == 0);
    CHECK(guest.attach(9) == EACCES);  // CMD mounting the tag again
    REQUIRE(guest.version() == 0);     // a new session clunks every fid, but grants no new attach
    CHECK(guest.attach(kRoot) == EACCES);
    CHECK(share.server->fid_count() == 0);
}

TEST_CASE("sandbox control share: the status file takes its first 16 bytes; no file, directory or resize") {
    ControlShare share;
    Client guest(*share.server);
    REQUIRE(guest.version() == 0);
    REQUIRE(guest.attach(kRoot) == 0);
    REQUIRE(guest.walk(kRoot, kCommand, {std::string(vmm::sandbox::kCommandFile)}) == 0);
    CHECK(guest.lopen(kCommand, kWronly) == EROFS);
    REQUIRE(guest.lopen(kCommand, kRdonly) == 0);  // the init reads the command

    REQUIRE(guest.walk(kRoot, kStatus, {std::string(vmm::sandbox::kStatusFile)}) == 0);
    CHECK(guest.lopen(kStatus, kWronly | kTrunc) == EROFS);
    CHECK(guest.lopen(kStatus, kWronly | kAppend) == EROFS);  // appends would pass the limit
    REQUIRE(guest.lopen(kStatus, kWronly) == 0);
    REQUIRE(guest.write(kStatus, 0, "3\n") == 0);  // what the init writes
    CHECK(share.session->reported_status() == 3);
    REQUIRE(guest.write(kStatus, 0, std::string(64 << 10, '9')) == 0);
    CHECK(guest.body().u32() == vmm::sandbox::kMaxStatusBytes);  // cut at the limit
    CHECK(guest.write(kStatus, vmm::sandbox::kMaxStatusBytes, "x") == EFBIG);
    CHECK(guest.write(kStatus, 1 << 30, "x") == EFBIG);
    CHECK(guest.truncate(kStatus, 1 << 30) == EROFS);
    CHECK(fs::file_size(share.dir + "/status") == vmm::sandbox::kMaxStatusBytes);
    CHECK(!share.session->reported_status());  // 16 nines is no status

    CHECK(guest.lcreate(kRoot, "fill") == EROFS);
    CHECK(guest.mkdir(kRoot, "d") == EROFS);
    CHECK(guest.symlink(kRoot, "l", "status") == EROFS);
    CHECK(guest.renameat(kRoot, "status", kRoot, "s") == EROFS);
    CHECK(guest.unlinkat(kRoot, "status") == EROFS);
    std::size_t entries = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(share.dir)) ++entries;
    CHECK(entries == 2);  // command and status
}
