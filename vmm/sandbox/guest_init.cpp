#include "vmm/sandbox/guest_init.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/module.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmm/base/unique_fd.hpp"
#include "vmm/sandbox/exchange.hpp"
#include "vmm/sandbox/modules.hpp"

namespace vmm::sandbox {
namespace {

using namespace std::chrono_literals;

// Where the shares are mounted in the initramfs; CMD is chrooted into kRootMount. The control
// share is detached again before CMD starts (see take_status_channel).
constexpr const char* kShareBase = "/lkvm";
constexpr const char* kControlMount = "/lkvm/ctl";
constexpr const char* kRootMount = "/lkvm/root";
// virtio_mmio brings the devices (the consoles' hvc0 too), 9pnet_virtio their 9p channels, 9p the
// file system; each is a module in distribution kernels (Debian's among them).
const std::vector<std::string> kModules = {"virtio_mmio", "9pnet_virtio", "9p"};
constexpr std::size_t kMaxModulesDep = 8 << 20;
// How long a device node or a 9p channel may take to show up after its driver loaded.
constexpr auto kDeviceWait = 10s;
constexpr auto kPoll = 20ms;
constexpr const char* kPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// A setup step failed: the guest powers off without a status, and lkvm exits 125.
struct InitError {
    std::string message;
};

void say(const std::string& message) {
    const std::string line = "lkvm-init: " + message + "\n";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

[[noreturn]] void fail(const std::string& what, int error = errno) {
    throw InitError{what + ": " + std::strerror(error)};
}

void make_dir(const std::string& path) {
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) fail("mkdir " + path);
}

// mkdir -p: a --workdir under /tmp needs its mount point in the fresh tmpfs. Components that
// exist are left alone (mkdir reports EEXIST before EROFS on the read-only root).
void make_dirs(const std::string& path) {
    for (std::size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1))
        make_dir(path.substr(0, slash));
    make_dir(path);
}

void mount_or_fail(const char* source, const std::string& target, const char* type, unsigned long flags,
                   const char* data = nullptr) {
    if (::mount(source, target.c_str(), type, flags, data) != 0 && errno != EBUSY)
        fail(std::string("mount ") + type + " on " + target);
}

// Whether the guest sees nothing in a directory: none of its entries, or it may not even list it
// (a sealed mount point answers EACCES).
bool shows_nothing(const std::string& path) {
    DIR* dir = ::opendir(path.c_str());
    if (!dir) return errno == EACCES;
    bool empty = true;
    while (const dirent* entry = ::readdir(dir))
        if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) empty = false;
    ::closedir(dir);
    return empty;
}

// A --workdir on another host file system lies beneath one of its mount points, which the host
// root share shows as an empty directory the guest cannot walk into (devices/p9/file_server.cpp,
// one_file_system), so the path to the workdir's mount point does not exist in the guest. A tmpfs
// on the deepest directory the guest can reach (that sealed, empty mount point: nothing is
// hidden) makes room for the path; mount_share then creates it.
void reach_mount_point(const std::string& root, const std::string& path) {
    struct stat st {};
    if (::stat((root + path).c_str(), &st) == 0) return;
    std::string reachable = root;
    for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
        const std::string prefix = root + path.substr(0, slash);
        if (::stat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) break;
        reachable = prefix;
        if (slash == std::string::npos) return;
    }
    if (reachable == root || !shows_nothing(reachable))
        throw InitError{"cannot make the mount point of " + path + ": " + reachable.substr(root.size()) +
                        " is neither empty nor another file system's mount point"};
    mount_or_fail("tmpfs", reachable, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

std::optional<std::string> read_file(const std::string& path, std::size_t limit) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    std::string out;
    char buffer[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::nullopt;
        if (n == 0) return out;
        if (out.size() + static_cast<std::size_t>(n) > limit) return std::nullopt;
        out.append(buffer, static_cast<std::size_t>(n));
    }
}

template <typename Ready>
bool wait_until(Ready ready) {
    const auto deadline = std::chrono::steady_clock::now() + kDeviceWait;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(kPoll);
    }
    return true;
}

// Loads what the kernel lacks of kModules from /lib/modules/RELEASE, dependencies first. No
// modules directory: nothing to do (they may be built in; the mounts say so if not).
void load_modules() {
    utsname uts{};
    if (::uname(&uts) != 0) return;
    const std::string dir = std::string("/lib/modules/") + uts.release + "/";
    const std::optional<std::string> dep = read_file(dir + "modules.dep", kMaxModulesDep);
    if (!dep) return;
    for (const std::string& path : load_order(parse_modules_dep(*dep), kModules)) {
        const std::string name = module_name(path);
        if (::access(("/sys/module/" + name).c_str(), F_OK) == 0) continue;  // built in or loaded
        UniqueFd fd(::open((dir + path).c_str(), O_RDONLY | O_CLOEXEC));
        // finit_module(2): a compressed file is decompressed by the kernel with this flag.
        const unsigned flags = module_compressed(path) ? MODULE_INIT_COMPRESSED_FILE : 0;
        if (!fd || (::syscall(SYS_finit_module, fd.get(), "", flags) != 0 && errno != EEXIST))
            say("warning: cannot load module " + path + ": " + std::strerror(errno));
    }
}

// A 9p channel appears when 9pnet_virtio has probed its device; until then the mount fails
// with ENOENT (net/9p/trans_virtio.c: no channel with that tag).
// `options` adds to the 9p mount options.
void mount_share(std::string_view tag, const std::string& target, bool read_only, const std::string& options = "") {
    make_dirs(target);
    const std::string source(tag);
    const std::string data = "trans=virtio,version=9p2000.L" + options;
    int error = 0;
    const bool mounted = wait_until([&] {
        if (::mount(source.c_str(), target.c_str(), "9p", read_only ? MS_RDONLY : 0, data.c_str()) == 0) return true;
        error = errno;
        return error != ENOENT;
    });
    if (mounted && error == 0) return;
    std::string hint;
    if (error == ENODEV || error == ENOENT)
        hint =
            " (the guest kernel needs virtio_mmio, 9pnet_virtio and 9p: built in, or as modules in the initrd's "
            "/lib/modules/RELEASE; lkvm sandbox -i INITRD)";
    throw InitError{"mounting the share " + source + " on " + target + ": " + std::strerror(error) + hint};
}

UniqueFd open_tty(const std::string& path) {
    if (!wait_until([&] { return ::access(path.c_str(), F_OK) == 0; }))
        throw InitError{path + " did not appear (the guest kernel needs its driver: 8250 UART, virtio_console)"};
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!fd) fail("open " + path);
    // Bytes pass as CMD writes them: no "\n" -> "\r\n" (OPOST), no echo of the host's input.
    termios mode{};
    if (::tcgetattr(fd.get(), &mode) == 0) {
        ::cfmakeraw(&mode);
        ::tcsetattr(fd.get(), TCSANOW, &mode);
    }
    return fd;
}

struct Stdio {
    UniqueFd in, out, err;
};

// In the child: never returns.
[[noreturn]] void exec_command(const GuestCommand& command, const Stdio& stdio, std::vector<char*>& argv) {
    if (::dup2(stdio.in.get(), STDIN_FILENO) < 0 || ::dup2(stdio.out.get(), STDOUT_FILENO) < 0 ||
        ::dup2(stdio.err.get(), STDERR_FILENO) < 0)
        ::_exit(kExitSandboxFailed);
    ::setsid();
    if (::chroot(kRootMount) != 0 || ::chdir(command.workdir.c_str()) != 0) {
        say("cannot enter " + command.workdir + ": " + std::strerror(errno));
        ::_exit(kExitSandboxFailed);
    }
    ::clearenv();
    ::setenv("PATH", kPath, 1);
    ::setenv("HOME", "/tmp", 1);
    ::setenv("TERM", "dumb", 1);
    ::setenv("PWD", command.workdir.c_str(), 1);
    ::execvp(argv[0], argv.data());
    const int error = errno;
    say(command.argv.front() + ": " + std::strerror(error));
    ::_exit(status_of_exec_error(error));
}

// Reaps every process (we are PID 1: orphans are ours) until `child` has ended.
int wait_for(pid_t child) {
    for (;;) {
        int wait_status = 0;
        const pid_t pid = ::waitpid(-1, &wait_status, 0);
        if (pid == child) return status_of_wait(wait_status);
        if (pid < 0 && errno != EINTR) fail("waitpid");
    }
}

// The command from the control share, and the status file opened for writing; then the share
// leaves the mount tree (MNT_DETACH: the open file keeps it alive for us alone). lkvm grants the
// control share one attach, ours (access=0: every access as uid 0 goes through it), and the
// guest's 9p transport lets one mount use a channel (net/9p/trans_virtio.c), so CMD can neither
// find the share in any directory nor mount it again; only the status file is writable, 16 bytes.
GuestCommand take_status_channel(UniqueFd& status) {
    mount_share(kControlTag, kControlMount, false, ",access=0");
    const std::string command_path = std::string(kControlMount) + "/" + std::string(kCommandFile);
    const std::optional<std::string> encoded = read_file(command_path, kMaxCommandBytes);
    std::optional<GuestCommand> command = encoded ? decode_command(*encoded) : std::nullopt;
    if (!command) throw InitError{command_path + " is missing or malformed"};
    const std::string status_path = std::string(kControlMount) + "/" + std::string(kStatusFile);
    status = UniqueFd(::open(status_path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!status) fail("open " + status_path);
    if (::umount2(kControlMount, MNT_DETACH) != 0) fail(std::string("umount ") + kControlMount);
    return *command;
}

void report(int status_fd, int status) {
    const std::string text = encode_status(status);
    if (::pwrite(status_fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
        ::fsync(status_fd) != 0)
        fail("write the status");
}

int run_sandbox(Stdio& stdio, UniqueFd& status) {
    // The initramfs: proc, sysfs and devtmpfs for modules and device nodes.
    for (const char* dir : {"/proc", "/sys", "/dev", kShareBase}) make_dir(dir);
    mount_or_fail("proc", "/proc", "proc", 0);
    mount_or_fail("sysfs", "/sys", "sysfs", 0);
    mount_or_fail("devtmpfs", "/dev", "devtmpfs", 0);
    load_modules();

    GuestCommand command = take_status_channel(status);

    stdio.out = open_tty("/dev/hvc0");
    stdio.err = open_tty("/dev/ttyS0");
    stdio.in = UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!stdio.in) fail("open /dev/null");

    // The host's / read-only; a fresh /tmp before --workdir (which may lie under /tmp and must
    // stay visible); then the guest's own /proc, /sys, /dev.
    const std::string root = kRootMount;
    mount_share(kRootTag, root, true);
    mount_or_fail("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    reach_mount_point(root, command.workdir);
    mount_share(kWorkTag, root + command.workdir, false);
    mount_or_fail("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_fail("sysfs", root + "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_fail("devtmpfs", root + "/dev", "devtmpfs", MS_NOSUID);

    std::vector<char*> argv;
    for (std::string& arg : command.argv) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t child = ::fork();
    if (child < 0) fail("fork");
    if (child == 0) exec_command(command, stdio, argv);
    return wait_for(child);
}

[[noreturn]] void power_off(const Stdio& stdio) {
    // CMD's last bytes leave the guest before it stops; then no "reboot: Power down" on stderr.
    for (const UniqueFd* tty : {&stdio.out, &stdio.err})
        if (*tty) ::tcdrain(tty->get());
    ::sync();
    // Console log level 0: not even the KERN_EMERG "reboot: Power down" (kernel/reboot.c) reaches
    // lkvm's stderr. syslog(2)'s console-off stops at level 1, which still prints it.
    if (UniqueFd printk{::open("/proc/sys/kernel/printk", O_WRONLY | O_CLOEXEC)}) {
        [[maybe_unused]] ssize_t n = ::write(printk.get(), "0", 1);
    }
    ::reboot(RB_POWER_OFF);
    // Not reached; if it were, PID 1 exiting panics the kernel, which (panic=-1) resets: lkvm ends.
    ::_exit(kExitSandboxFailed);
}

}  // namespace

bool is_guest_init(int argc, const char* const* argv) {
    if (argc < 1 || ::getpid() != 1) return false;
    return std::string_view(argv[0]).ends_with(kInitPath);
}

void run_guest_init() {
    Stdio stdio;
    UniqueFd status;
    try {
        const int cmd_status = run_sandbox(stdio, status);
        report(status.get(), cmd_status);
    } catch (const InitError& e) {
        say("error: " + e.message);
    } catch (const std::exception& e) {
        say(std::string("error: ") + e.what());
    }
    power_off(stdio);
}

}  // namespace vmm::sandbox
