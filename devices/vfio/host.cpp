#include "devices/vfio/host.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <sstream>

namespace devices::vfio {
namespace {

int result(long r) { return r < 0 ? -errno : static_cast<int>(r); }

// CAP_IPC_LOCK in the effective set (VFIO type1 skips RLIMIT_MEMLOCK then).
bool has_ipc_lock() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    return (data[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32))) != 0;
}

// VmLck of this process in bytes (pages already charged to RLIMIT_MEMLOCK).
std::uint64_t locked_bytes() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmLck:", 0) == 0) {
            std::istringstream in(line.substr(6));
            std::uint64_t kib = 0;
            in >> kib;
            return kib * 1024;
        }
    }
    return 0;
}

}  // namespace

int LinuxHost::open(const std::string& path, int flags) { return result(::open(path.c_str(), flags | O_CLOEXEC)); }
void LinuxHost::close(int fd) { ::close(fd); }
int LinuxHost::ioctl(int fd, unsigned long request, void* arg) { return result(::ioctl(fd, request, arg)); }
int LinuxHost::ioctl_value(int fd, unsigned long request, unsigned long arg) {
    return result(::ioctl(fd, request, arg));
}
ssize_t LinuxHost::pread(int fd, void* buffer, std::size_t size, off_t offset) {
    ssize_t n = ::pread(fd, buffer, size, offset);
    return n < 0 ? -errno : n;
}
ssize_t LinuxHost::pwrite(int fd, const void* buffer, std::size_t size, off_t offset) {
    ssize_t n = ::pwrite(fd, buffer, size, offset);
    return n < 0 ? -errno : n;
}
void* LinuxHost::mmap(std::size_t size, int prot, int fd, off_t offset) {
    void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, offset);
    return p == MAP_FAILED ? nullptr : p;
}
void LinuxHost::munmap(void* address, std::size_t size) { ::munmap(address, size); }

std::optional<std::string> LinuxHost::read_text(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::optional<std::string> LinuxHost::read_link(const std::string& path) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n < 0) return std::nullopt;
    return std::string(target, static_cast<std::size_t>(n));
}

std::vector<std::string> LinuxHost::list_dir(const std::string& path) {
    std::vector<std::string> names;
    DIR* dir = ::opendir(path.c_str());
    if (!dir) return names;
    while (dirent* entry = ::readdir(dir)) {
        std::string name = entry->d_name;
        if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(dir);
    return names;
}

std::optional<std::uint64_t> LinuxHost::memlock_budget() {
    if (has_ipc_lock()) return std::nullopt;
    rlimit limit{};
    if (::getrlimit(RLIMIT_MEMLOCK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return std::nullopt;
    const std::uint64_t locked = locked_bytes();
    return limit.rlim_cur > locked ? limit.rlim_cur - locked : 0;
}

std::uint64_t LinuxHost::page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

}  // namespace devices::vfio
