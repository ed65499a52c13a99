#include "vmm/sandbox/session.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/kernel_loader.hpp"
#include "vmm/sandbox/cpio.hpp"
#include "vmm/sandbox/exchange.hpp"
#include "vmm/sandbox/remove_tree.hpp"

namespace vmm::sandbox {
namespace {

constexpr const char* kControlSubdir = "control";
constexpr const char* kInitrdName = "initrd";

UniqueFd open_or_throw(const std::string& path, int flags, const std::string& what, mode_t mode = 0600) {
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
    if (!fd) throw_errno(what + " '" + path + "'");
    return fd;
}

void write_all(int fd, std::span<const std::uint8_t> bytes, const std::string& what) {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw_errno("writing " + what);
        bytes = bytes.subspan(static_cast<std::size_t>(n));
    }
}

// Copies `from` to `to` and returns the number of bytes copied.
std::uint64_t copy_all(int from, int to, const std::string& what) {
    std::vector<std::uint8_t> buffer(1 << 20);
    std::uint64_t total = 0;
    for (;;) {
        ssize_t n = ::read(from, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("reading " + what);
        if (n == 0) return total;
        write_all(to, std::span(buffer.data(), static_cast<std::size_t>(n)), "the sandbox initrd");
        total += static_cast<std::uint64_t>(n);
    }
}

// --workdir as an absolute path without symlinks (the guest mounts it at that path inside the
// host's tree), checked here so the error names the flag.
std::string resolve_workdir(const std::string& workdir) {
    char resolved[PATH_MAX];
    if (!::realpath(workdir.c_str(), resolved)) throw_errno("--workdir '" + workdir + "'");
    struct stat st {};
    if (::stat(resolved, &st) != 0) throw_errno("--workdir '" + workdir + "'");
    if (!S_ISDIR(st.st_mode)) throw SetupError("--workdir '" + workdir + "' is not a directory");
    if (::access(resolved, R_OK | W_OK | X_OK) != 0)
        throw_errno("--workdir '" + workdir + "': lkvm needs to read and write it");
    return resolved;
}

std::string make_private_dir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/lkvm-sandbox-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw_errno("creating a private directory like '" + pattern + "'");
    return pattern;
}

}  // namespace

std::vector<std::uint8_t> init_archive(std::span<const std::uint8_t> init) {
    CpioWriter cpio;
    cpio.add_directory("dev", 0755);
    // The kernel opens /dev/console for init's stdin/out/err (init/main.c); 5:1 is the console.
    cpio.add_char_device("dev/console", 0600, 5, 1);
    cpio.add_file(std::string(kInitPath.substr(1)), 0755, init);
    return cpio.finish();
}

VmConfig guest_config(const Request& request, const std::string& workdir, const std::string& control_dir,
                      const std::string& initrd) {
    VmConfig config = request.config;
    config.params = std::string(kBaseParams) + (request.config.params ? " " + *request.config.params : "");
    config.initrd = initrd;
    config.console = ConsoleKind::Virtio;
    config.serial_to_stderr = true;
    config.no_reboot = true;     // a guest that resets (a panic: panic=-1) ends lkvm
    config.interactive = false;  // CMD's stdin is /dev/null; Ctrl-C stops lkvm (130)
    // Never another file system: not the host's /proc, /sys, /dev, /run (the guest mounts its own).
    config.shares.push_back({.dir = "/", .tag = std::string(kRootTag), .read_only = true, .one_file_system = true});
    config.shares.push_back({workdir, std::string(kWorkTag), false});
    // The control share: the command to read, and one file to write CMD's status into, no more
    // than a status's bytes; nothing can be created. Attached once, by our init, before CMD runs.
    ShareConfig control{control_dir, std::string(kControlTag), true};
    control.writable_file = std::string(kStatusFile);
    control.writable_limit = kMaxStatusBytes;
    control.max_attaches = 1;
    config.shares.push_back(control);
    return config;
}

SandboxExit exit_status(const VmEnd& end, std::optional<int> reported) {
    // A status the guest wrote early (CMD is root in the guest) must not hide how the VM ended.
    const std::string ignored = reported ? "; the status the guest reported is ignored" : "";
    switch (end.how) {
        case VmEnd::How::PowerOff:
            if (reported) return {*reported, ""};
            return {kExitSandboxFailed,
                    "sandbox: the guest ended without reporting the command's status; exit status 125"};
        case VmEnd::How::Signal:  // as lkvm run reports it; the signal's line is already out
            return {kExitSignalBase + end.signal, ""};
        case VmEnd::How::Reset:
            return {kExitSandboxFailed,
                    "sandbox: the guest reset (a kernel panic, or CMD rebooted it); exit status 125" + ignored};
        case VmEnd::How::Crash:
        case VmEnd::How::Error: break;  // lkvm has said why
    }
    return {kExitSandboxFailed, reported ? "sandbox: exit status 125" + ignored : ""};
}

Session::Session(const Request& request, const std::string& init) {
    const std::string workdir = resolve_workdir(request.workdir);
    const GuestCommand command{workdir, request.argv};
    if (std::string error = check_command(command); !error.empty()) throw SetupError("lkvm sandbox: " + error);
    dir_ = make_private_dir();
    try {
        const std::string control = dir_ + "/" + kControlSubdir;
        if (::mkdir(control.c_str(), 0700) != 0) throw_errno("creating '" + control + "'");
        const std::string encoded = encode_command(command);
        write_all(open_or_throw(control + "/" + std::string(kCommandFile), O_WRONLY | O_CREAT | O_EXCL, "cannot create")
                      .get(),
                  std::span(reinterpret_cast<const std::uint8_t*>(encoded.data()), encoded.size()), "the command file");
        // Empty until the guest's init writes CMD's status (the share lets it write this file only).
        open_or_throw(control + "/" + std::string(kStatusFile), O_WRONLY | O_CREAT | O_EXCL, "cannot create");

        // The user's initrd, zeros up to a multiple of 4, then the archive with our init.
        const std::string initrd = dir_ + "/" + kInitrdName;
        UniqueFd out = open_or_throw(initrd, O_WRONLY | O_CREAT | O_EXCL, "cannot create");
        std::uint64_t size = 0;
        if (!request.config.initrd.empty())
            size = copy_all(open_or_throw(request.config.initrd, O_RDONLY, "-i/--initrd: cannot open").get(), out.get(),
                            "-i/--initrd '" + request.config.initrd + "'");
        const std::vector<std::uint8_t> zeros(cpio_padding(size));
        write_all(out.get(), zeros, "the sandbox initrd");
        const BootFile init_file = BootFile::open(init, "lkvm's own binary");
        std::vector<std::uint8_t> init_bytes(init_file.size());
        init_file.read_at(0, init_bytes);
        write_all(out.get(), init_archive(init_bytes), "the sandbox initrd");
        config_ = guest_config(request, workdir, control, initrd);
    } catch (...) {
        remove_private_dir();
        throw;
    }
}

Session::~Session() { remove_private_dir(); }

void Session::remove_private_dir() const {
    // remove_tree follows no symlink and needs two descriptors at any depth.
    if (const std::string error = remove_tree(dir_); !error.empty())
        log_error("sandbox: %s; remove it by hand", error.c_str());
}

std::optional<int> Session::reported_status() const {
    const std::string path = dir_ + "/" + kControlSubdir + "/" + std::string(kStatusFile);
    // Written through the share by the guest: no symlink followed, no FIFO waited on, bounded.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return std::nullopt;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    char buffer[kMaxStatusBytes + 1];
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n <= 0 || static_cast<std::size_t>(n) > kMaxStatusBytes) return std::nullopt;
    return decode_status(std::string_view(buffer, static_cast<std::size_t>(n)));
}

}  // namespace vmm::sandbox
