// devices::p9::Server against a scratch directory: basic operations, confinement (every escape
// attempt of DEVELOPERS' hostile guest, including a racing host thread), ro, fid limits.
#include "devices/p9/file_server.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "tests/devices/p9/p9_client.hpp"

using namespace p9test;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<devices::p9::Server> serve(const Scratch& s, devices::p9::ServerOptions options = {}) {
    return devices::p9::Server::open(s.exported.string(), options);
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

constexpr std::uint32_t kRoot = 1;

}  // namespace

TEST_CASE("p9 server: version, attach, create, write, read back, getattr, readdir") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version(1 << 20) == 0);
    Decoder v = c.body();
    CHECK(v.u32() == 512 * 1024 + 4096);  // clamped to the server's maximum
    CHECK(v.str() == "9P2000.L");
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {}) == 0);  // clone
    REQUIRE(c.lcreate(2, "hello.txt") == 0);
    REQUIRE(c.write(2, 0, "hello, 9p") == 0);
    CHECK(c.body().u32() == 9);
    CHECK(c.read(2, 7, 100) == "9p");
    CHECK(c.size_of(2) == 9);
    REQUIRE(c.clunk(2) == 0);
    CHECK(slurp(s.exported / "hello.txt") == "hello, 9p");

    REQUIRE(c.mkdir(kRoot, "sub") == 0);
    CHECK(fs::is_directory(s.exported / "sub"));
    REQUIRE(c.walk(kRoot, 3, {}) == 0);
    REQUIRE(c.lopen(3, kRdonly) == 0);
    auto names = c.readdir(3);
    CHECK(std::count(names.begin(), names.end(), "hello.txt") == 1);
    CHECK(std::count(names.begin(), names.end(), "sub") == 1);
    // A tiny count returns no entry rather than a partial one.
    CHECK(c.readdir(3, 10).empty());
    CHECK(c.clunk(3) == 0);
    CHECK(c.clunk(3) == EBADF);
}

TEST_CASE("p9 server: symlink, readlink, rename keeps fids usable, unlinkat, statfs, locks") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.symlink(kRoot, "link", "/etc/passwd") == 0);
    CHECK(fs::read_symlink(s.exported / "link") == "/etc/passwd");
    REQUIRE(c.walk(kRoot, 2, {"link"}) == 0);
    CHECK(c.last_qid().type == devices::p9::kQidSymlink);
    REQUIRE(c.call(Type::Treadlink, [](Encoder& e) { e.u32(2); }) == 0);
    CHECK(c.body().str() == "/etc/passwd");

    REQUIRE(c.mkdir(kRoot, "a") == 0);
    std::ofstream(s.exported / "a" / "f") << "data";
    REQUIRE(c.walk(kRoot, 3, {"a", "f"}) == 0);
    REQUIRE(c.renameat(kRoot, "a", kRoot, "b") == 0);
    CHECK(fs::exists(s.exported / "b" / "f"));
    // The fid walked before the rename still opens its file (its path followed the rename).
    REQUIRE(c.lopen(3, kRdonly) == 0);
    CHECK(c.read(3, 0, 10) == "data");
    REQUIRE(c.walk(kRoot, 4, {"b"}) == 0);
    CHECK(c.unlinkat(4, "f") == 0);
    CHECK(!fs::exists(s.exported / "b" / "f"));
    CHECK(c.unlinkat(kRoot, "b") == EISDIR);
    CHECK(c.unlinkat(kRoot, "b", AT_REMOVEDIR) == 0);

    REQUIRE(c.call(Type::Tstatfs, [](Encoder& e) { e.u32(kRoot); }) == 0);
    Decoder st = c.body();
    st.u32();
    CHECK(st.u32() > 0);  // bsize

    REQUIRE(c.walk(kRoot, 5, {}) == 0);
    REQUIRE(c.lcreate(5, "locked") == 0);
    auto lock = [&](std::uint32_t fid, std::uint8_t type) {
        REQUIRE(c.call(Type::Tlock, [&](Encoder& e) {
            e.u32(fid), e.u8(type), e.u32(0), e.u64(0), e.u64(0), e.u32(42), e.str("guest");
        }) == 0);
        return c.body().u8();
    };
    CHECK(lock(5, 1) == 0);  // write lock: P9_LOCK_SUCCESS
    REQUIRE(c.walk(kRoot, 6, {"locked"}) == 0);
    REQUIRE(c.lopen(6, kRdwr) == 0);
    CHECK(lock(6, 1) == 1);  // another fid conflicts: P9_LOCK_BLOCKED
    REQUIRE(c.call(Type::Tgetlock, [](Encoder& e) { e.u32(6), e.u8(1), e.u64(0), e.u64(0), e.u32(43), e.str("g2"); }) ==
            0);
    CHECK(c.body().u8() == 1);  // the conflicting write lock is reported
    CHECK(lock(5, 2) == 0);     // unlock
    CHECK(lock(6, 1) == 0);
    CHECK(c.call(Type::Tfsync, [](Encoder& e) { e.u32(6), e.u32(0); }) == 0);

    // Missing xattr: ENODATA; the list of a plain file is readable (maybe empty).
    CHECK(c.call(Type::Txattrwalk, [](Encoder& e) { e.u32(6), e.u32(7), e.str("user.none"); }) == ENODATA);
    CHECK(c.call(Type::Txattrwalk, [](Encoder& e) { e.u32(6), e.u32(7), e.str(""); }) == 0);
    CHECK(c.clunk(7) == 0);
    // Truncation through setattr.
    CHECK(c.write(6, 0, "0123456789") == 0);
    CHECK(c.truncate(6, 4) == 0);
    CHECK(fs::file_size(s.exported / "locked") == 4);
}

TEST_CASE("p9 server: a fid walked before a host rename of its parent still opens the file") {
    Scratch s;
    fs::create_directory(s.exported / "d");
    std::ofstream(s.exported / "d" / "f") << "x";
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"d"}) == 0);
    fs::rename(s.exported / "d", s.exported / "e");
    // Walks continue from the fid's descriptor, not its old name.
    REQUIRE(c.walk(2, 3, {"f"}) == 0);
    CHECK(c.last_qid().type == devices::p9::kQidFile);
}

TEST_CASE("p9 server: .. at the root stays at the root, and names with '/' are refused") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {}) == 0);
    const Qid root = c.last_qid();
    REQUIRE(c.walk(kRoot, 5, {"..", "..", ".."}) == 0);
    struct stat st {};
    REQUIRE(::stat(s.exported.c_str(), &st) == 0);
    CHECK(c.last_qid().path == st.st_ino);
    (void)root;
    // "../outside" from the root: `..` is the root again, then no "outside" in the export.
    CHECK(c.walk(kRoot, 3, {"..", "outside"}) == 0xffffffff);
    CHECK(c.walked() == 1);
    CHECK(c.clunk(3) == EBADF);  // a short walk creates no fid
    CHECK(c.walk(kRoot, 3, {"../outside"}) == EINVAL);
    CHECK(c.walk(kRoot, 3, {"../outside/secret"}) == EINVAL);
    CHECK(c.walk(kRoot, 3, {std::string("a\0b", 3)}) == EINVAL);
    CHECK(c.mkdir(kRoot, "..") == EINVAL);
    CHECK(c.mkdir(kRoot, "x/y") == EINVAL);
    CHECK(c.lcreate(kRoot, "../escape") == EINVAL);
    CHECK(c.renameat(kRoot, "..", kRoot, "z") == EINVAL);
    CHECK(c.symlink(kRoot, "../l", "x") == EINVAL);
    CHECK(!fs::exists(s.base / "escape"));
    // A walk from a subdirectory back up with .. stays below the export.
    REQUIRE(c.mkdir(kRoot, "sub") == 0);
    REQUIRE(c.walk(kRoot, 4, {"sub", "..", "..", "sub"}) == 0);
}

TEST_CASE("p9 server: symlinks are never followed (absolute, to /, relative out, /proc magic links)") {
    Scratch s;
    fs::create_directory_symlink(s.outside, s.exported / "abs");
    fs::create_directory_symlink("/", s.exported / "slash");
    fs::create_directory_symlink("../outside", s.exported / "rel");
    fs::create_symlink(s.outside / "secret", s.exported / "secretlink");
    fs::create_directory_symlink("/proc/self/root", s.exported / "magic");
    fs::create_directory_symlink("/proc", s.exported / "proc");
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    for (const char* link : {"abs", "slash", "rel", "magic", "proc"}) {
        CAPTURE(link);
        // The link itself can be walked to (the client reads it and resolves it in the guest)...
        REQUIRE(c.walk(kRoot, 2, {link}) == 0);
        CHECK(c.last_qid().type == devices::p9::kQidSymlink);
        // ...but never through, nor opened, nor used as a directory.
        CHECK(c.walk(2, 3, {"secret"}) == ENOTDIR);
        CHECK(c.lopen(2, kRdonly) == ELOOP);
        CHECK(c.lcreate(2, "planted") == ENOTDIR);
        CHECK(c.mkdir(2, "planted") != 0);
        CHECK(c.walk(kRoot, 3, {link, "secret"}) == 0xffffffff);
        CHECK(c.clunk(2) == 0);
    }
    CHECK(c.walk(kRoot, 2, {"proc", "self", "root", "etc"}) == 0xffffffff);
    REQUIRE(c.walk(kRoot, 2, {"secretlink"}) == 0);
    CHECK(c.lopen(2, kRdonly) == ELOOP);
    CHECK(c.lopen(2, kWronly | kTrunc) == ELOOP);
    CHECK(c.truncate(2, 0) == EINVAL);
    CHECK(c.call(Type::Txattrwalk, [](Encoder& e) { e.u32(2), e.u32(9), e.str("user.x"); }) == ENODATA);
    CHECK(s.read_secret() == "secret");
    CHECK(!fs::exists(s.outside / "planted"));
    CHECK(!fs::exists("/planted"));
}

TEST_CASE("p9 server: a symlink the guest plants is data, not a way out") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.symlink(kRoot, "out", s.outside.string()) == 0);
    REQUIRE(c.symlink(kRoot, "up", "..") == 0);
    CHECK(c.walk(kRoot, 2, {"out", "secret"}) == 0xffffffff);
    CHECK(c.walk(kRoot, 2, {"up", "outside"}) == 0xffffffff);
    const std::uint32_t err = c.lcreate(kRoot, "out");  // O_CREAT never follows the planted link
    CHECK((err == ELOOP || err == EEXIST));
    REQUIRE(c.walk(kRoot, 2, {}) == 0);
    CHECK(c.lcreate(2, "out", kRdwr | kCreate | kTrunc) != 0);
    CHECK(s.read_secret() == "secret");
}

TEST_CASE("p9 server: a file replaced by a symlink after the walk: the fid opens its own file, never the link") {
    Scratch s;
    std::ofstream(s.exported / "f") << "inside";
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    REQUIRE(c.walk(kRoot, 3, {"f"}) == 0);
    fs::remove(s.exported / "f");
    fs::create_symlink(s.outside / "secret", s.exported / "f");
    // The walked file, unlinked but still open-able through the fid (as on any POSIX file system).
    REQUIRE(c.lopen(2, kRdwr | kTrunc) == 0);
    CHECK(c.write(2, 0, "written") == 0);
    CHECK(c.truncate(3, 2) == 0);
    CHECK(c.read(2, 0, 64) == "wr");
    CHECK(s.read_secret() == "secret");
    CHECK(fs::is_symlink(s.exported / "f"));
}

TEST_CASE("p9 server: a host thread swapping a directory and a symlink to outside never lets a walk out") {
    Scratch s;
    fs::create_directory(s.exported / "d");
    std::ofstream(s.exported / "d" / "secret") << "inside";
    fs::create_directory_symlink(s.outside, s.exported / "swap");
    struct stat outside_secret {};
    REQUIRE(::stat((s.outside / "secret").c_str(), &outside_secret) == 0);
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);

    std::atomic<bool> stop{false};
    std::atomic<unsigned> swaps{0};
    std::thread racer([&] {
        // Atomically exchange the real directory `d` and the symlink `swap` (renameat2).
        while (!stop.load()) {
            if (::renameat2(AT_FDCWD, (s.exported / "d").c_str(), AT_FDCWD, (s.exported / "swap").c_str(),
                            RENAME_EXCHANGE) == 0)
                swaps.fetch_add(1);
        }
    });
    // Paced by the racer (on a loaded host it may get little CPU), with a bound on the walks.
    unsigned inside = 0;
    for (unsigned i = 0; (i < 3000 || swaps.load() < 100) && i < 2000000; ++i) {
        const std::uint32_t err = c.walk(kRoot, 2, {"d", "secret"});
        if (err != 0) continue;
        CHECK(c.last_qid().path != outside_secret.st_ino);
        std::uint32_t read_err = 0;
        if (c.lopen(2, kRdonly) == 0) {
            const std::string data = c.read(2, 0, 64, &read_err);
            CHECK(data != "secret");
            if (data == "inside") ++inside;
        }
        CHECK(c.clunk(2) == 0);
    }
    stop = true;
    racer.join();
    CHECK(swaps.load() >= 100);
    CHECK(inside > 0);  // the walk does succeed whenever `d` is the real directory
    CHECK(s.read_secret() == "secret");
}

// The rig's racer (tests/rig/9p.test.sh) as a host thread: `race` is removed and re-created,
// alternately as a fresh directory holding "inside" and as a symlink to outside, while the client
// walks one name at a time and reads race/secret the way Linux's v9fs does (fs/9p/vfs_inode.c:
// lookup = Twalk of one name + Tgetattr, open = Twalk clone + Tlopen). Every request must be
// answered, the walk must never leave the export, and the fids must all be given back.
TEST_CASE("p9 server: a host loop recreating a directory and a symlink keeps every request answered") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    const fs::path race = s.exported / "race", fresh = s.exported / "race.d";

    std::atomic<bool> stop{false};
    std::atomic<unsigned> flips{0};
    std::thread racer([&] {
        std::error_code ignored;
        while (!stop.load()) {
            fs::remove_all(fresh, ignored);
            fs::create_directory(fresh, ignored);
            std::ofstream(fresh / "secret") << "inside";
            fs::remove_all(race, ignored);
            fs::rename(fresh, race, ignored);
            fs::remove_all(race, ignored);
            fs::create_directory_symlink(s.outside, race, ignored);
            flips.fetch_add(1);
        }
    });
    // At least 2000 lookups, until the racer has flipped `race` 300 times and at least one lookup
    // found it (on a loaded host either thread may get little CPU: the racer may flip 300 times
    // while this thread waits), with a bound in case the racer gets none.
    unsigned inside = 0, walks = 0, symlinks = 0;
    for (unsigned i = 0; (i < 2000 || flips.load() < 300 || walks == 0) && i < 2000000; ++i) {
        // Each call REQUIREs a well-formed reply (Client::send).
        if (c.walk(kRoot, 2, {"race"}) != 0) continue;
        ++walks;
        if (c.last_qid().type == devices::p9::kQidSymlink) ++symlinks;
        (void)c.size_of(2);  // the Tgetattr of a lookup
        if (c.walk(2, 3, {"secret"}) == 0) {
            CHECK(c.walk(3, 4, {}) == 0);
            if (c.lopen(4, kRdonly) == 0) {
                const std::string data = c.read(4, 0, 64);
                CHECK(data != "secret");
                if (data == "inside") ++inside;
            }
            CHECK(c.clunk(4) == 0);
            CHECK(c.clunk(3) == 0);
        }
        CHECK(c.clunk(2) == 0);
        CHECK(server->fid_count() == 1);
    }
    stop = true;
    racer.join();
    MESSAGE("flips=" << flips.load() << " walks=" << walks << " symlinks=" << symlinks << " inside=" << inside);
    CHECK(flips.load() >= 300);
    CHECK(walks > 0);
    CHECK(s.read_secret() == "secret");
}

TEST_CASE("p9 server: ,ro refuses every write and still serves reads") {
    Scratch s;
    std::ofstream(s.exported / "f") << "ro data";
    fs::create_directory(s.exported / "dir");
    devices::p9::ServerOptions options;
    options.read_only = true;
    auto server = serve(s, options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    CHECK(c.lopen(2, kWronly) == EROFS);
    CHECK(c.lopen(2, kRdwr) == EROFS);
    CHECK(c.lopen(2, kRdonly | kTrunc) == EROFS);
    CHECK(c.truncate(2, 0) == EROFS);
    REQUIRE(c.lopen(2, kRdonly) == 0);
    CHECK(c.read(2, 0, 100) == "ro data");
    CHECK(c.write(2, 0, "x") == EROFS);
    CHECK(c.lcreate(kRoot, "new") == EROFS);
    CHECK(c.mkdir(kRoot, "new") == EROFS);
    CHECK(c.symlink(kRoot, "new", "f") == EROFS);
    CHECK(c.unlinkat(kRoot, "f") == EROFS);
    CHECK(c.unlinkat(kRoot, "dir", AT_REMOVEDIR) == EROFS);
    CHECK(c.renameat(kRoot, "f", kRoot, "g") == EROFS);
    CHECK(c.call(Type::Tlink, [](Encoder& e) { e.u32(kRoot), e.u32(2), e.str("hard"); }) == EROFS);
    CHECK(c.call(Type::Tmknod, [](Encoder& e) {
        e.u32(kRoot), e.str("fifo"), e.u32(S_IFIFO | 0644), e.u32(0), e.u32(0), e.u32(0);
    }) == EROFS);
    CHECK(c.call(Type::Txattrcreate, [](Encoder& e) { e.u32(2), e.str("user.a"), e.u64(1), e.u32(0); }) == EROFS);
    CHECK(c.call(Type::Tremove, [](Encoder& e) { e.u32(2); }) == EROFS);
    CHECK(fs::exists(s.exported / "f"));
    CHECK(slurp(s.exported / "f") == "ro data");
    CHECK(!fs::exists(s.exported / "new"));
}

TEST_CASE("p9 server: fids are bounded per guest and freed by clunk and Tversion") {
    Scratch s;
    devices::p9::ServerOptions options;
    options.max_fids = 8;
    auto server = serve(s, options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    for (std::uint32_t fid = 2; fid <= 8; ++fid) REQUIRE(c.walk(kRoot, fid, {}) == 0);
    CHECK(server->fid_count() == 8);
    CHECK(c.walk(kRoot, 9, {}) == EMFILE);
    CHECK(c.attach(9) == EMFILE);
    CHECK(c.call(Type::Txattrwalk, [](Encoder& e) { e.u32(kRoot), e.u32(9), e.str(""); }) == EMFILE);
    CHECK(c.walk(kRoot, 2, {}) == EEXIST);  // in use
    REQUIRE(c.clunk(8) == 0);
    CHECK(c.walk(kRoot, 9, {}) == 0);
    REQUIRE(c.version() == 0);  // a new session drops every fid
    CHECK(server->fid_count() == 0);
    CHECK(c.walk(kRoot, 2, {}) == EBADF);
}

TEST_CASE("p9 server: no device nodes for the guest, and only regular files and directories open") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    CHECK(c.call(Type::Tmknod, [](Encoder& e) {
        e.u32(kRoot), e.str("sda"), e.u32(S_IFBLK | 0600), e.u32(8), e.u32(0), e.u32(0);
    }) == EPERM);
    CHECK(c.call(Type::Tmknod, [](Encoder& e) {
        e.u32(kRoot), e.str("mem"), e.u32(S_IFCHR | 0600), e.u32(1), e.u32(1), e.u32(0);
    }) == EPERM);
    REQUIRE(c.call(Type::Tmknod, [](Encoder& e) {
        e.u32(kRoot), e.str("fifo"), e.u32(S_IFIFO | 0600), e.u32(0), e.u32(0), e.u32(0);
    }) == 0);
    REQUIRE(c.walk(kRoot, 2, {"fifo"}) == 0);
    CHECK(c.lopen(2, kRdonly) == EOPNOTSUPP);  // would block the serving thread
}

namespace {
// Sends one request on a thread of its own and waits up to 10 s for the reply. A request whose
// host open blocks on the FIFO `unblock` (no writer, or no reader) would keep the serving thread
// forever; the test then reports it and frees the thread by opening the FIFO's other end.
bool answered_in_time(Client& c, Type type, const std::function<void(Encoder&)>& body, const fs::path& unblock) {
    std::atomic<bool> done{false};
    std::thread request([&] {
        c.call(type, body);
        done = true;
    });
    for (int i = 0; i < 1000 && !done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const bool in_time = done.load();
    for (int attempt = 0; !done.load() && attempt < 500; ++attempt) {
        for (int mode : {O_WRONLY | O_NONBLOCK, O_RDONLY | O_NONBLOCK}) {
            const int fd = ::open(unblock.c_str(), mode);
            if (fd >= 0) {
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                ::close(fd);
            }
        }
    }
    request.join();
    return in_time;
}
}  // namespace

// A guest can turn the name of a walked (even opened) file into a FIFO: unlink it and Tmknod a
// FIFO in its place. Opening a FIFO blocks until the other end opens, and the server runs on the
// VMM's event-loop thread: every later request, every device and SIGTERM would wait forever. So
// an open for a fid must reach the fid's own inode (and never block), whatever the name says now.
TEST_CASE("p9 server: a FIFO swapped in for a walked file never blocks the serving thread") {
    Scratch s;
    std::ofstream(s.exported / "f") << "old";
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    REQUIRE(c.walk(kRoot, 3, {"f"}) == 0);
    REQUIRE(c.unlinkat(kRoot, "f") == 0);
    auto mkfifo = [](Encoder& e) { e.u32(kRoot), e.str("f"), e.u32(S_IFIFO | 0600), e.u32(0), e.u32(0), e.u32(0); };
    REQUIRE(c.call(Type::Tmknod, mkfifo) == 0);
    const fs::path fifo = s.exported / "f";

    CHECK(answered_in_time(
        c, Type::Tlopen, [](Encoder& e) { e.u32(2), e.u32(kRdonly); }, fifo));
    // Answered with the walked file (unlinked, still open-able as on any POSIX file system) or
    // an error; never with the FIFO's (empty) contents.
    if (c.reply_type() == static_cast<std::uint8_t>(Type::Rlopen)) CHECK(c.read(2, 0, 16) == "old");
    // A truncate and an xattr read of the old fid open the file, too (O_WRONLY: no reader).
    CHECK(answered_in_time(
        c, Type::Tsetattr,
        [](Encoder& e) {
            e.u32(3), e.u32(8), e.u32(0), e.u32(0), e.u32(0), e.u64(0);
            for (int i = 0; i < 4; ++i) e.u64(0);
        },
        fifo));
    CHECK(answered_in_time(
        c, Type::Txattrwalk, [](Encoder& e) { e.u32(3), e.u32(4), e.str(""); }, fifo));

    // A FIFO the guest walks to directly: truncate and xattrs must not open it either.
    REQUIRE(c.walk(kRoot, 5, {"f"}) == 0);
    CHECK(answered_in_time(
        c, Type::Tsetattr,
        [](Encoder& e) {
            e.u32(5), e.u32(8), e.u32(0), e.u32(0), e.u32(0), e.u64(0);
            for (int i = 0; i < 4; ++i) e.u64(0);
        },
        fifo));
    CHECK(c.reply_type() == static_cast<std::uint8_t>(Type::Rlerror));
    CHECK(answered_in_time(
        c, Type::Txattrwalk, [](Encoder& e) { e.u32(5), e.u32(6), e.str("user.x"); }, fifo));
    CHECK(c.reply_type() == static_cast<std::uint8_t>(Type::Rlerror));
    // Tlcreate without O_EXCL of the FIFO's name: open(O_CREAT) of an existing FIFO opens it.
    REQUIRE(c.walk(kRoot, 7, {}) == 0);
    CHECK(answered_in_time(
        c, Type::Tlcreate, [](Encoder& e) { e.u32(7), e.str("f"), e.u32(kWronly), e.u32(0644), e.u32(0); }, fifo));
    CHECK(c.reply_type() == static_cast<std::uint8_t>(Type::Rlerror));
    REQUIRE(c.walk(kRoot, 8, {}) == 0);
    CHECK(answered_in_time(
        c, Type::Tlcreate, [](Encoder& e) { e.u32(8), e.str("f"), e.u32(kRdonly), e.u32(0644), e.u32(0); }, fifo));
    CHECK(c.reply_type() == static_cast<std::uint8_t>(Type::Rlerror));
    CHECK(fs::is_fifo(fifo));
}

TEST_CASE("p9 server: malformed messages get Rlerror and never a crash") {
    Scratch s;
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    std::vector<std::uint8_t> reply;

    // Size field larger than the message, smaller, and below the header.
    std::vector<std::uint8_t> msg = {20, 0, 0, 0, static_cast<std::uint8_t>(Type::Tclunk), 3, 0, 1, 0, 0, 0};
    CHECK(c.send(msg) == EPROTO);
    CHECK(c.reply()[5] == 3);  // the tag is echoed
    msg[0] = 5;
    CHECK(c.send(msg) == EPROTO);
    server->handle(std::vector<std::uint8_t>{1, 2, 3}, reply, 1024);
    REQUIRE(reply.size() == 11);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rlerror));

    // Truncated bodies.
    CHECK(c.call(Type::Twalk, [](Encoder& e) { e.u32(kRoot), e.u32(2), e.u16(2), e.str("a"); }) == EPROTO);
    CHECK(c.call(Type::Twalk, [](Encoder& e) { e.u32(kRoot), e.u32(2), e.u16(1), e.u16(50), e.u8('a'); }) == EPROTO);
    CHECK(c.call(Type::Tlcreate, [](Encoder& e) { e.u32(kRoot), e.str("x"); }) == EPROTO);
    CHECK(!fs::exists(s.exported / "x"));
    // Twrite whose count exceeds the data that came, by a lot (no overflow on offset + count).
    CHECK(c.call(Type::Twrite, [](Encoder& e) { e.u32(kRoot), e.u64(~0ull), e.u32(0xffffffff), e.u8(1); }) == EPROTO);
    // Too many walk names, unknown types, Tauth.
    CHECK(c.call(Type::Twalk, [](Encoder& e) {
        e.u32(kRoot), e.u32(2), e.u16(17);
        for (int i = 0; i < 17; ++i) e.str("a");
    }) == EINVAL);
    CHECK(c.call(static_cast<Type>(200), [](Encoder& e) { e.u32(0); }) == EOPNOTSUPP);
    CHECK(c.call(Type::Tauth, [](Encoder& e) { e.u32(5), e.str("u"), e.str(""), e.u32(0); }) == EOPNOTSUPP);
    // Offsets beyond off_t.
    REQUIRE(c.walk(kRoot, 2, {}) == 0);
    REQUIRE(c.lcreate(2, "f") == 0);
    std::uint32_t err = 0;
    c.read(2, ~0ull, 10, &err);
    CHECK(err == EINVAL);
    CHECK(c.write(2, ~0ull - 1, "ab") == EFBIG);
    // A request larger than the negotiated msize.
    REQUIRE(c.version(8192) == 0);
    REQUIRE(c.attach(kRoot) == 0);
    CHECK(c.call(Type::Tmkdir,
                 [](Encoder& e) { e.u32(kRoot), e.str(std::string(9000, 'a')), e.u32(0755), e.u32(0); }) == EMSGSIZE);
    // Reply room too small for any reply: nothing, not a partial message, and not executed.
    server->handle(std::vector<std::uint8_t>{11, 0, 0, 0, static_cast<std::uint8_t>(Type::Tclunk), 1, 0, 1, 0, 0, 0},
                   reply, 10);
    CHECK(reply.empty());
    CHECK(server->fid_count() == 1);
    // A read clipped to the room the guest gave.
    REQUIRE(c.walk(kRoot, 3, {}) == 0);
    REQUIRE(c.lcreate(3, "g") == 0);
    REQUIRE(c.write(3, 0, std::string(100, 'z')) == 0);
    CHECK(c.call(
              Type::Tread, [](Encoder& e) { e.u32(3), e.u64(0), e.u32(100); }, 31) == 0);
    CHECK(c.reply().size() == 31);
    CHECK(c.body().u32() == 20);
}

namespace {
std::size_t open_descriptors() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

// The status flags of the descriptor this process holds open on `file` (not O_PATH), or -1.
int open_flags_of(const fs::path& file) {
    const fs::path want = fs::canonical(file);
    for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        if (fs::read_symlink(entry.path(), ec) != want || ec) continue;
        const int fd = std::stoi(entry.path().filename().string());
        const int flags = ::fcntl(fd, F_GETFL);
        if (flags >= 0 && (flags & O_PATH) == 0) return flags;
    }
    return -1;
}

std::uint32_t setattr_mode(Client& c, std::uint32_t fid, std::uint32_t mode) {
    return c.call(Type::Tsetattr, [&](Encoder& e) {
        e.u32(fid), e.u32(1), e.u32(mode), e.u32(0), e.u32(0), e.u64(0);  // P9_ATTR_MODE
        for (int i = 0; i < 4; ++i) e.u64(0);
    });
}

std::uint32_t lcreate_mode(Client& c, std::uint32_t fid, const std::string& name, std::uint32_t mode) {
    return c.call(Type::Tlcreate, [&](Encoder& e) { e.u32(fid), e.str(name), e.u32(kRdwr), e.u32(mode), e.u32(0); });
}

// Tlock (P9_LOCK_TYPE_RDLCK / WRLCK over the whole file); returns the status byte, or 0xff for an
// Rlerror.
std::uint8_t lock(Client& c, std::uint32_t fid, std::uint8_t type) {
    const std::uint32_t err = c.call(Type::Tlock, [&](Encoder& e) {
        e.u32(fid), e.u8(type), e.u32(0), e.u64(0), e.u64(0), e.u32(1), e.str("guest");
    });
    return err ? 0xff : c.body().u8();
}
}  // namespace

// Item: a hostile guest exhausting lkvm's descriptors. Each share's fid limit comes from what the
// process limit leaves after lkvm's reserve (vmm/base/descriptor_limit.hpp), split evenly.
TEST_CASE("p9 fid_limit: the shares split what the descriptor limit leaves, at most 4096 fids each") {
    CHECK(devices::p9::fid_limit(1 << 20, 1) == 4096);
    CHECK(devices::p9::fid_limit(1 << 20, 3) == 4096);
    CHECK(devices::p9::fid_limit(1024 - 512, 1) == 256);
    CHECK(devices::p9::fid_limit(1024 - 512, 3) == 85);
    CHECK(devices::p9::fid_limit(0, 2) == 0);
    CHECK(devices::p9::fid_limit(1000, 0) == 4096);
    // Within the budget whatever the split: fids x descriptors per fid x shares.
    for (std::uint64_t budget : {0ull, 1ull, 511ull, 512ull, 7000ull, 1ull << 40})
        for (std::size_t shares = 1; shares < 9; ++shares)
            CHECK(std::uint64_t{devices::p9::fid_limit(budget, shares)} * devices::p9::kDescriptorsPerFid * shares <=
                  budget);
}

TEST_CASE("p9 server: a guest at its fid limit holds at most two host descriptors per fid") {
    Scratch s;
    std::ofstream(s.exported / "f") << "x";
    fs::create_directory(s.exported / "d");
    devices::p9::ServerOptions options;
    options.max_fids = 64;
    auto server = serve(s, options);
    Client c(*server);
    const std::size_t before = open_descriptors();
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    // Every kind of fid: open files, open directories, xattr fids, fids after Tlcreate.
    std::uint32_t fid = 2;
    for (; fid <= 64; ++fid) {
        switch (fid % 4) {
            case 0:
                REQUIRE(c.walk(kRoot, fid, {"f"}) == 0);
                REQUIRE(c.lopen(fid, kRdonly) == 0);
                break;
            case 1:
                REQUIRE(c.walk(kRoot, fid, {"d"}) == 0);
                REQUIRE(c.lopen(fid, kRdonly) == 0);
                break;
            case 2:
                REQUIRE(c.call(Type::Txattrwalk, [&](Encoder& e) { e.u32(kRoot), e.u32(fid), e.str(""); }) == 0);
                break;
            default:
                REQUIRE(c.walk(kRoot, fid, {}) == 0);
                REQUIRE(c.lcreate(fid, "n" + std::to_string(fid)) == 0);
                break;
        }
    }
    CHECK(server->fid_count() == 64);
    CHECK(open_descriptors() - before <= 64 * devices::p9::kDescriptorsPerFid);
    CHECK(c.walk(kRoot, fid, {"f"}) == EMFILE);
    CHECK(c.attach(fid) == EMFILE);
    CHECK(open_descriptors() - before <= 64 * devices::p9::kDescriptorsPerFid);
    REQUIRE(c.version() == 0);
    CHECK(open_descriptors() == before);
}

// Item: xattr fids each pinned a 64 KiB buffer, whatever they held.
TEST_CASE("p9 server: xattr fids hold exactly what was read, and all of them at most max_xattr_bytes") {
    Scratch s;
    std::ofstream(s.exported / "f") << "x";
    devices::p9::ServerOptions options;
    options.max_xattr_bytes = 2500;
    auto server = serve(s, options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    auto xattrwalk = [&](std::uint32_t newfid, const std::string& name) {
        return c.call(Type::Txattrwalk, [&](Encoder& e) { e.u32(2), e.u32(newfid), e.str(name); });
    };
    // Empty listings: no memory at all, however many.
    for (std::uint32_t fid = 10; fid < 110; ++fid) REQUIRE(xattrwalk(fid, "") == 0);
    CHECK(server->xattr_bytes() == 0);
    for (std::uint32_t fid = 10; fid < 110; ++fid) REQUIRE(c.clunk(fid) == 0);

    const std::string value(1000, 'v');
    if (::setxattr((s.exported / "f").c_str(), "user.big", value.data(), value.size(), 0) != 0) {
        MESSAGE("no user xattrs on this file system; the bound is not exercised");
        return;
    }
    REQUIRE(xattrwalk(3, "user.big") == 0);
    CHECK(c.body().u64() == 1000);
    CHECK(server->xattr_bytes() == 1000);
    REQUIRE(xattrwalk(4, "user.big") == 0);
    CHECK(server->xattr_bytes() == 2000);
    CHECK(xattrwalk(5, "user.big") == ENOMEM);  // 3000 > 2500
    CHECK(c.read(3, 0, 4096) == value);
    REQUIRE(c.clunk(3) == 0);
    CHECK(server->xattr_bytes() == 1000);
    CHECK(xattrwalk(5, "user.big") == 0);
    // Counted when it replaces its own fid, and dropped by Tversion.
    REQUIRE(c.clunk(5) == 0);
    REQUIRE(c.call(Type::Txattrwalk, [&](Encoder& e) { e.u32(2), e.u32(2), e.str("user.big"); }) == 0);
    CHECK(server->xattr_bytes() == 2000);
    REQUIRE(c.version() == 0);
    CHECK(server->xattr_bytes() == 0);
}

// Item: a guest left a set-user-ID root-owned file in a read-write export.
TEST_CASE("p9 server: set-user-ID and set-group-ID are dropped on create and refused on chmod, unless allow_setid") {
    Scratch s;
    auto mode_of = [&](const char* name) { return fs::status(s.exported / name).permissions(); };
    constexpr auto kSetId = fs::perms::set_uid | fs::perms::set_gid;
    {
        auto server = serve(s);
        Client c(*server);
        REQUIRE(c.version() == 0);
        REQUIRE(c.attach(kRoot) == 0);
        REQUIRE(c.walk(kRoot, 2, {}) == 0);
        REQUIRE(lcreate_mode(c, 2, "suid", 06755) == 0);
        CHECK((mode_of("suid") & kSetId) == fs::perms::none);
        CHECK((mode_of("suid") & fs::perms::owner_exec) != fs::perms::none);  // the rest is kept
        CHECK(c.call(Type::Tmkdir, [](Encoder& e) { e.u32(kRoot), e.str("sgid"), e.u32(02775), e.u32(0); }) == 0);
        CHECK((mode_of("sgid") & kSetId) == fs::perms::none);
        CHECK(c.call(Type::Tmknod, [](Encoder& e) {
            e.u32(kRoot), e.str("node"), e.u32(S_IFREG | 04755), e.u32(0), e.u32(0), e.u32(0);
        }) == 0);
        CHECK((mode_of("node") & kSetId) == fs::perms::none);
        REQUIRE(c.walk(kRoot, 3, {"node"}) == 0);
        CHECK(setattr_mode(c, 3, 04755) == EPERM);
        CHECK(setattr_mode(c, 3, 02755) == EPERM);
        CHECK((mode_of("node") & kSetId) == fs::perms::none);
        CHECK(setattr_mode(c, 3, 0700) == 0);
        CHECK(mode_of("node") == fs::perms::owner_all);
    }
    devices::p9::ServerOptions options;
    options.allow_setid = true;
    auto server = serve(s, options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"node"}) == 0);
    CHECK(setattr_mode(c, 2, 04755) == 0);
    CHECK((mode_of("node") & fs::perms::set_uid) != fs::perms::none);
}

// Item: a guest's lock through a read-only export kept a host process from write-locking its file.
TEST_CASE("p9 server: a lock on a read-only share takes no host lock") {
    Scratch s;
    std::ofstream(s.exported / "f") << "data";
    devices::p9::ServerOptions options;
    options.read_only = true;
    auto server = serve(s, options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    REQUIRE(c.lopen(2, kRdonly) == 0);
    CHECK(lock(c, 2, 0) == 0);  // P9_LOCK_SUCCESS: granted, as far as the guest is concerned
    const int host = ::open((s.exported / "f").c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(host >= 0);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    CHECK(::fcntl(host, F_OFD_SETLK, &fl) == 0);  // the host's writer is not kept out
    ::close(host);
    CHECK(lock(c, 2, 2) == 0);  // unlock
}

// Item: the host root reached /proc, /sys, /dev and every other file system mounted below it.
TEST_CASE("p9 server: one_file_system seals the host's proc, sys, dev, run and other mount points") {
    devices::p9::ServerOptions options;
    options.read_only = true;
    options.one_file_system = true;
    auto server = devices::p9::Server::open("/", options);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    std::uint32_t fid = 2;
    for (const char* dir : {"proc", "sys", "dev", "run"}) {
        CAPTURE(dir);
        if (!fs::is_directory(fs::path("/") / dir)) continue;
        // There and a directory (the guest mounts its own there) ...
        REQUIRE(c.walk(kRoot, fid, {dir}) == 0);
        CHECK(c.last_qid().type == devices::p9::kQidDir);
        CHECK(c.call(Type::Tgetattr, [&](Encoder& e) { e.u32(fid), e.u64(0x7ff); }) == 0);
        // ... but nothing in it: not listed, not opened, not walked into or through.
        CHECK(c.lopen(fid, kRdonly) == EACCES);
        CHECK(c.walk(fid, fid + 1, {"self"}) == EACCES);
        CHECK(c.walk(kRoot, fid + 1, {dir, "self", "environ"}) == 0xffffffff);
        CHECK(c.walked() == 1);
        CHECK(c.call(Type::Txattrwalk, [&](Encoder& e) { e.u32(fid), e.u32(fid + 1), e.str(""); }) == EACCES);
        CHECK(c.call(Type::Tstatfs, [&](Encoder& e) { e.u32(fid); }) == EACCES);
        // `..` leads back to the root, which is not sealed.
        REQUIRE(c.walk(fid, fid + 1, {".."}) == 0);
        CHECK(c.lopen(fid + 1, kRdonly) == 0);
        fid += 2;
    }
    // Any other mount point below / (from mountinfo): sealed too, by RESOLVE_NO_XDEV. A walk to
    // it ends there (a mount point above it is sealed: the walk stops short) or at it, unopenable.
    std::ifstream mountinfo("/proc/self/mountinfo");
    std::string line;
    std::size_t checked = 0;
    while (std::getline(mountinfo, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, point;
        fields >> id >> parent >> devno >> root >> point;
        std::error_code ec;
        if (point == "/" || point.find('\\') != std::string::npos || !fs::is_directory(point, ec)) continue;
        std::vector<std::string> names;
        for (const auto& part : fs::path(point).relative_path()) names.push_back(part.string());
        if (names.empty() || names.size() > 16) continue;
        CAPTURE(point);
        const std::uint32_t err = c.call(Type::Twalk, [&](Encoder& e) {
            e.u32(kRoot), e.u32(fid), e.u16(static_cast<std::uint16_t>(names.size()));
            for (const std::string& n : names) e.str(n);
        });
        if (err != 0) continue;  // the first name already refused: nothing reached
        const std::uint16_t walked = c.body().u16();
        if (walked == names.size()) {
            CHECK(c.lopen(fid, kRdonly) == EACCES);
            c.clunk(fid);
        }
        ++checked;
    }
    MESSAGE("mount points below / checked as sealed: " << checked);
}

// Item: a regular file whose reads wait (/proc/kmsg, a tracefs pipe) held the serving thread (the
// event loop) for good. Every file the server opens for the guest stays O_NONBLOCK, on every
// share, so such a read answers EAGAIN; disk file systems ignore the flag for regular files.
TEST_CASE("p9 server: files and directories opened for the guest stay non-blocking") {
    Scratch s;
    std::ofstream(s.exported / "f") << "data";
    fs::create_directory(s.exported / "d");
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    REQUIRE(c.walk(kRoot, 2, {"f"}) == 0);
    REQUIRE(c.lopen(2, kRdonly) == 0);
    CHECK((open_flags_of(s.exported / "f") & O_NONBLOCK) != 0);
    CHECK(c.read(2, 0, 10) == "data");  // a disk file reads as before
    REQUIRE(c.walk(kRoot, 3, {"d"}) == 0);
    REQUIRE(c.lopen(3, kRdonly) == 0);
    CHECK((open_flags_of(s.exported / "d") & O_NONBLOCK) != 0);
    REQUIRE(c.walk(kRoot, 4, {}) == 0);
    REQUIRE(c.lcreate(4, "new") == 0);
    CHECK((open_flags_of(s.exported / "new") & O_NONBLOCK) != 0);
    CHECK(c.write(4, 0, "written") == 0);
    CHECK(slurp(s.exported / "new") == "written");
}

// Item: Tlcreate opened an existing device node (inotify saw the open) before it checked that it
// was a regular file. The type is now looked at on an O_PATH descriptor first; inotify's IN_OPEN
// (and IN_ACCESS / IN_MODIFY) would tell any open.
TEST_CASE("p9 server: Tlcreate of an existing device node or FIFO opens nothing; of a regular file, opens it") {
    Scratch s;
    const bool root_made_node = ::mknod((s.exported / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0;
    if (!root_made_node) MESSAGE("cannot make a device node here; checked with a FIFO only");
    REQUIRE(::mkfifo((s.exported / "fifo").c_str(), 0666) == 0);
    std::ofstream(s.exported / "file") << "old contents";
    const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    REQUIRE(watch >= 0);
    REQUIRE(::inotify_add_watch(watch, s.exported.c_str(), IN_OPEN | IN_ACCESS | IN_MODIFY) >= 0);
    auto opened = [&] {
        std::vector<std::string> names;
        alignas(inotify_event) char buffer[4096];
        for (;;) {
            const ssize_t n = ::read(watch, buffer, sizeof buffer);
            if (n <= 0) return names;
            for (ssize_t at = 0; at < n;) {
                const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
                if (event->len) names.emplace_back(event->name);
                at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
            }
        }
    };
    auto server = serve(s);
    Client c(*server);
    REQUIRE(c.version() == 0);
    REQUIRE(c.attach(kRoot) == 0);
    std::uint32_t fid = 2;
    for (const char* name : {"null", "fifo"}) {
        if (std::string(name) == "null" && !root_made_node) continue;
        CAPTURE(name);
        for (std::uint32_t flags : {kRdonly, kWronly, kRdwr, kRdwr | kTrunc}) {
            REQUIRE(c.walk(kRoot, fid, {}) == 0);
            CHECK(c.lcreate(fid, name, flags) == EOPNOTSUPP);
            ++fid;
        }
        CHECK(opened().empty());
    }
    // An existing regular file is opened (and truncated when asked), as open(O_CREAT) does.
    REQUIRE(c.walk(kRoot, fid, {}) == 0);
    REQUIRE(c.lcreate(fid, "file", kRdwr | kTrunc) == 0);
    CHECK(slurp(s.exported / "file").empty());
    CHECK(!opened().empty());
    REQUIRE(c.walk(kRoot, fid + 1, {}) == 0);
    CHECK(c.call(Type::Tlcreate, [&](Encoder& e) {
        e.u32(fid + 1), e.str("file"), e.u32(kRdwr | 0200), e.u32(0644), e.u32(0);
    }) == EEXIST);
    REQUIRE(c.walk(kRoot, fid + 2, {}) == 0);
    CHECK(c.lcreate(fid + 2, "d", kRdonly) == 0);  // a new name is created
    ::close(watch);
}
