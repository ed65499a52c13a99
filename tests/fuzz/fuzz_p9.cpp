// libFuzzer target: the 9P2000.L decoder and server against a scratch export directory. Each
// input is a session of messages: mostly well-formed requests with fuzzed fids, names (including
// "..", "/", NUL bytes and the planted symlinks), flags and offsets, sometimes raw bytes, with a
// fuzzed reply room. Besides ASan/UBSan findings it traps when the server holds a descriptor of
// anything outside the export, when the directory beside the export changes, when a reply is
// larger than the room given or its size field lies, or when the fid bound is exceeded.
// Bounded resources, checked after every request: the server holds at most kDescriptorsPerFid
// host descriptors per fid (so at most max_fids x that), its xattr values stay within
// max_xattr_bytes, and without allow_setid no file in the export ever has a set-ID bit.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "devices/p9/file_server.hpp"
#include "devices/p9/wire.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/base/log.hpp"

namespace {

namespace fs = std::filesystem;
using devices::p9::Encoder;
using devices::p9::Type;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr std::uint32_t kMaxFids = 32;

struct World {
    std::string base, exported, outside;
    DIR* proc_fds = nullptr;     // /proc/self/fd, opened once and rewound for every listing
    std::set<int> baseline_fds;  // open before the server of this input: the harness's and libFuzzer's
    std::string outside_state;
};
World* world = nullptr;

std::vector<int> open_fds() {
    std::vector<int> fds;
    ::rewinddir(world->proc_fds);  // the listing is taken afresh at offset 0 (fs/proc/fd.c)
    const int own = ::dirfd(world->proc_fds);
    while (const dirent* e = ::readdir(world->proc_fds))
        if (e->d_name[0] != '.' && std::atoi(e->d_name) != own) fds.push_back(std::atoi(e->d_name));
    return fds;
}

std::string outside_state() {
    std::string state;
    for (const auto& entry : fs::directory_iterator(world->outside)) state += entry.path().filename().string() + ";";
    std::ifstream in(world->outside + "/secret");
    state += std::string(std::istreambuf_iterator<char>(in), {});
    return state;
}

// Every file descriptor the server holds names a file in the export (or, deleted, one that was);
// with `none_left`, the server must hold no file descriptor at all. Returns how many it holds.
std::size_t check_fds(bool none_left = false) {
    std::size_t held = 0;
    for (int fd : open_fds()) {
        if (world->baseline_fds.count(fd)) continue;
        char target[4096];
        const ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
        if (n < 0) continue;  // closed in between
        const std::string path(target, static_cast<std::size_t>(n));
        // Pipes and sockets of the harness (libFuzzer, the sanitizers) are not files; the server
        // opens nothing but paths.
        if (path.empty() || path[0] != '/') continue;
        require(!none_left);
        const bool inside = path == world->exported || path.rfind(world->exported + "/", 0) == 0;
        if (!inside) std::fprintf(stderr, "fuzz_p9: descriptor %d names %s, outside the export\n", fd, path.c_str());
        require(inside);
        ++held;
    }
    return held;
}

// No file the guest made or changed is set-user-ID or set-group-ID (ServerOptions::allow_setid).
bool no_setid_files() {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(world->exported, ec), end; !ec && it != end; it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID))) return false;
    }
    return true;
}

// An input may take our own permissions away (Tsetattr mode 0 on a directory): give them back
// before emptying the export, or remove_all fails when the harness does not run as root.
void restore_permissions(const std::string& root) {
    ::chmod(root.c_str(), 0700);
    std::error_code ec;
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) == 0 && S_ISDIR(st.st_mode)) ::chmod(it->path().c_str(), 0700);
    }
}

void fresh_export() {
    std::error_code ignored;
    restore_permissions(world->exported);
    fs::remove_all(world->exported, ignored);
    fs::create_directories(world->exported + "/dir/sub");
    std::ofstream(world->exported + "/file") << "file contents";
    std::ofstream(world->exported + "/dir/inner") << "inner";
    fs::create_directory_symlink("/", world->exported + "/slash");
    fs::create_directory_symlink(world->outside, world->exported + "/abs");
    fs::create_directory_symlink("../outside", world->exported + "/rel");
    fs::create_directory_symlink("/proc/self/root", world->exported + "/magic");
    fs::create_symlink(world->outside + "/secret", world->exported + "/secretlink");
    // Something for Txattrwalk to hold (tmpfs has user xattrs since Linux 6.6; else none).
    const std::string value(3000, 'x');
    (void)::setxattr((world->exported + "/file").c_str(), "user.x", value.data(), value.size(), 0);
}

const char* const kNames[] = {"file",  "dir",        "sub",     "inner",  "slash", "abs", "rel",
                              "magic", "secretlink", "..",      ".",      "new",   "n2",  "../outside",
                              "/",     "",           "outside", "secret", "etc",   "proc"};

std::string pick_name(fuzz::Input& in) {
    const std::uint8_t choice = in.take<std::uint8_t>();
    if (choice < 230) return kNames[choice % (sizeof kNames / sizeof kNames[0])];
    const std::uint8_t length = in.take<std::uint8_t>() % 16;
    std::string name;
    for (std::uint8_t i = 0; i < length; ++i) name.push_back(static_cast<char>(in.take<std::uint8_t>()));
    return name;
}

std::uint32_t pick_fid(fuzz::Input& in) {
    const std::uint8_t v = in.take<std::uint8_t>();
    return v == 255 ? devices::p9::kNoFid : v % 40;
}

const Type kTypes[] = {Type::Tversion,  Type::Tattach,  Type::Twalk,      Type::Tlopen,       Type::Tlcreate,
                       Type::Tread,     Type::Twrite,   Type::Tclunk,     Type::Tremove,      Type::Tgetattr,
                       Type::Tsetattr,  Type::Treaddir, Type::Tmkdir,     Type::Tsymlink,     Type::Tmknod,
                       Type::Treadlink, Type::Trename,  Type::Trenameat,  Type::Tunlinkat,    Type::Tlink,
                       Type::Tstatfs,   Type::Tfsync,   Type::Txattrwalk, Type::Txattrcreate, Type::Tlock,
                       Type::Tgetlock,  Type::Tflush,   Type::Tauth};

// One request body for `type`, fields mostly plausible.
void body(fuzz::Input& in, Type type, Encoder& e) {
    auto flags = [&] {
        return in.take<std::uint8_t>() < 200 ? in.take<std::uint32_t>() & 0103 : in.take<std::uint32_t>();
    };
    auto offset = [&] { return in.take<std::uint8_t>() < 200 ? in.take<std::uint16_t>() : in.take<std::uint64_t>(); };
    auto count = [&] {
        return in.take<std::uint8_t>() < 200 ? in.take<std::uint16_t>() % 8192 : in.take<std::uint32_t>();
    };
    switch (type) {
        case Type::Tversion:
            e.u32(in.take<std::uint32_t>()), e.str(in.take<std::uint8_t>() < 240 ? "9P2000.L" : "9P2000");
            break;
        case Type::Tattach:
            e.u32(pick_fid(in)), e.u32(pick_fid(in)), e.str("u"), e.str(pick_name(in)), e.u32(in.take<std::uint16_t>());
            break;
        case Type::Twalk: {
            e.u32(pick_fid(in)), e.u32(pick_fid(in));
            const std::uint16_t n = in.take<std::uint8_t>() % 18;
            e.u16(n);
            for (std::uint16_t i = 0; i < n; ++i) e.str(pick_name(in));
            break;
        }
        case Type::Tlopen: e.u32(pick_fid(in)), e.u32(flags()); break;
        case Type::Tlcreate:
            e.u32(pick_fid(in)), e.str(pick_name(in)), e.u32(flags() | 0100), e.u32(in.take<std::uint16_t>()), e.u32(0);
            break;
        case Type::Tread: e.u32(pick_fid(in)), e.u64(offset()), e.u32(count()); break;
        case Type::Twrite: {
            e.u32(pick_fid(in)), e.u64(offset());
            const std::uint32_t n = in.take<std::uint8_t>();
            const bool lie = in.take<std::uint8_t>() > 240;
            e.u32(lie ? in.take<std::uint32_t>() : n);
            for (std::uint32_t i = 0; i < n; ++i) e.u8(static_cast<std::uint8_t>(i));
            break;
        }
        case Type::Tclunk:
        case Type::Tremove:
        case Type::Treadlink:
        case Type::Tstatfs: e.u32(pick_fid(in)); break;
        case Type::Tgetattr: e.u32(pick_fid(in)), e.u64(in.take<std::uint64_t>()); break;
        case Type::Tsetattr:
            e.u32(pick_fid(in)), e.u32(in.take<std::uint16_t>()), e.u32(in.take<std::uint16_t>() & 07777),
                e.u32(in.take<std::uint16_t>()), e.u32(in.take<std::uint16_t>()), e.u64(offset());
            for (int i = 0; i < 4; ++i) e.u64(in.take<std::uint64_t>());
            break;
        case Type::Treaddir: e.u32(pick_fid(in)), e.u64(offset()), e.u32(count()); break;
        case Type::Tmkdir: e.u32(pick_fid(in)), e.str(pick_name(in)), e.u32(in.take<std::uint16_t>()), e.u32(0); break;
        case Type::Tsymlink: e.u32(pick_fid(in)), e.str(pick_name(in)), e.str(pick_name(in)), e.u32(0); break;
        case Type::Tmknod:
            e.u32(pick_fid(in)), e.str(pick_name(in)), e.u32(in.take<std::uint32_t>()), e.u32(in.take<std::uint8_t>()),
                e.u32(in.take<std::uint8_t>()), e.u32(0);
            break;
        case Type::Trename: e.u32(pick_fid(in)), e.u32(pick_fid(in)), e.str(pick_name(in)); break;
        case Type::Trenameat:
            e.u32(pick_fid(in)), e.str(pick_name(in)), e.u32(pick_fid(in)), e.str(pick_name(in));
            break;
        case Type::Tunlinkat:
            e.u32(pick_fid(in)), e.str(pick_name(in)),
                e.u32(in.take<std::uint8_t>() & 1 ? 0x200 : in.take<std::uint32_t>());
            break;
        case Type::Tlink: e.u32(pick_fid(in)), e.u32(pick_fid(in)), e.str(pick_name(in)); break;
        case Type::Tfsync: e.u32(pick_fid(in)), e.u32(in.take<std::uint8_t>()); break;
        case Type::Txattrwalk:
            e.u32(pick_fid(in)), e.u32(pick_fid(in)), e.str(in.take<std::uint8_t>() & 1 ? "" : "user.x");
            break;
        case Type::Txattrcreate: e.u32(pick_fid(in)), e.str("user.x"), e.u64(in.take<std::uint16_t>()), e.u32(0); break;
        case Type::Tlock:
            e.u32(pick_fid(in)), e.u8(in.take<std::uint8_t>() % 4), e.u32(in.take<std::uint8_t>()), e.u64(offset()),
                e.u64(offset()), e.u32(1), e.str("c");
            break;
        case Type::Tgetlock:
            e.u32(pick_fid(in)), e.u8(in.take<std::uint8_t>() % 4), e.u64(offset()), e.u64(offset()), e.u32(1),
                e.str("c");
            break;
        case Type::Tflush: e.u16(in.take<std::uint16_t>()); break;
        default: e.u32(pick_fid(in)), e.str(pick_name(in)), e.str(""), e.u32(0); break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    vmm::set_log_level(vmm::LogLevel::Error);
    world = new World;
    // The export is rebuilt for every input: on tmpfs that costs a few microseconds, on ext4 the
    // inode allocator's scan past recently deleted inodes took a quarter of the run.
    std::string tmpl = std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/lkvm-fuzz-p9-XXXXXX";
    require(::mkdtemp(tmpl.data()) != nullptr);
    world->base = tmpl;
    world->exported = world->base + "/export";
    world->outside = world->base + "/outside";
    fs::create_directories(world->outside);
    std::ofstream(world->outside + "/secret") << "secret";
    world->outside_state = outside_state();
    world->proc_fds = ::opendir("/proc/self/fd");
    require(world->proc_fds != nullptr);
    std::atexit([] {
        ::closedir(world->proc_fds);
        std::error_code ignored;
        fs::remove_all(world->base, ignored);
    });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Input in{data, size};
    fresh_export();
    // Taken per input, not once: libFuzzer opens files of its own between inputs (-merge's control
    // file), and a descriptor the server leaked is caught by the previous input's final check.
    world->baseline_fds.clear();
    for (int fd : open_fds()) world->baseline_fds.insert(fd);
    devices::p9::ServerOptions options;
    const std::uint8_t mode = in.take<std::uint8_t>();
    options.read_only = mode % 8 == 0;
    options.allow_setid = mode & 0x10;
    options.one_file_system = mode & 0x20;
    // Half the read-only exports are shaped like lkvm sandbox's control share: one attach, and
    // only `file` writable, its first kWritableLimit bytes.
    constexpr std::uint64_t kWritableLimit = 16;
    const bool control_share = options.read_only && (mode & 8);
    if (control_share) {
        options.writable_file = "file";
        options.writable_limit = kWritableLimit;
        options.max_attaches = 1;
    }
    options.max_fids = kMaxFids;
    options.max_xattr_bytes = 8192;  // two or three values of user.x
    options.max_msize = 16384 + in.take<std::uint16_t>();
    {
        auto server = devices::p9::Server::open(world->exported, options);
        std::vector<std::uint8_t> message, reply;
        // A session usually starts as Linux's does; then up to 64 requests.
        if (in.take<std::uint8_t>() < 230) {
            Encoder v(message, 64, Type::Tversion, 0);
            v.u32(65536), v.str("9P2000.L"), v.finish();
            server->handle(message, reply, 4096);
            Encoder a(message, 64, Type::Tattach, 0);
            a.u32(0), a.u32(devices::p9::kNoFid), a.str("root"), a.str(""), a.u32(0), a.finish();
            server->handle(message, reply, 4096);
        }
        for (int step = 0; step < 64 && !in.empty(); ++step) {
            const std::uint8_t kind = in.take<std::uint8_t>();
            const std::uint32_t room = in.take<std::uint8_t>() < 230 ? 65536 : in.take<std::uint16_t>();
            if (kind < 240) {
                const Type type = kTypes[kind % (sizeof kTypes / sizeof kTypes[0])];
                Encoder e(message, 1 << 20, type, in.take<std::uint16_t>());
                body(in, type, e);
                require(e.finish());
                // Sometimes cut or pad the message, keeping or breaking its size field.
                if (in.take<std::uint8_t>() > 245) message.resize(in.take<std::uint16_t>() % (message.size() + 8));
            } else {
                const std::uint16_t length = in.take<std::uint16_t>() % 512;
                message.clear();
                for (std::uint16_t i = 0; i < length && !in.empty(); ++i) message.push_back(in.take<std::uint8_t>());
            }
            server->handle(message, reply, room);
            require(reply.size() <= room);
            if (!reply.empty()) {
                const auto header = devices::p9::parse_header(reply);
                require(header.has_value());
                require(header->size <= server->msize() || header->type == static_cast<std::uint8_t>(Type::Rlerror));
            }
            require(server->fid_count() <= kMaxFids);
            require(check_fds() <= kMaxFids * devices::p9::kDescriptorsPerFid);
            require(server->xattr_bytes() <= options.max_xattr_bytes);
        }
    }
    require(options.allow_setid || no_setid_files());
    check_fds(true);  // the server closed every descriptor it opened
    require(outside_state() == world->outside_state);
    if (control_share) require(fs::file_size(world->exported + "/file") <= kWritableLimit);
    return 0;
}
