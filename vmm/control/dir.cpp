#include "vmm/control/dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vmm/base/error.hpp"

namespace vmm {
namespace {

constexpr std::size_t kMaxNameLength = 64;
constexpr std::string_view kSocketSuffix = ".sock";

std::string quoted(const std::string& path) { return "'" + path + "'"; }

}  // namespace

bool valid_vm_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameLength || name == "." || name == "..") return false;
    return std::all_of(name.begin(), name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
               ch == '_' || ch == '.';
    });
}

std::string vm_name_rule() { return "a VM name is 1 to 64 letters, digits, '-', '_' or '.'"; }

std::string control_dir_from_env() {
    if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && runtime[0] == '/')
        return std::string(runtime) + "/lkvm";
    if (const char* home = std::getenv("HOME"); home && home[0] == '/') return std::string(home) + "/.lkvm";
    throw SetupError("no directory for control sockets: set XDG_RUNTIME_DIR or HOME");
}

bool check_control_dir(const std::string& dir, bool create) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
        if (errno != ENOENT) throw_errno("control directory " + quoted(dir));
        if (!create) return false;
        // mkdir applies the umask; 0700 needs no group/other bits, so the umask cannot widen it.
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
            throw_errno("cannot create control directory " + quoted(dir));
        if (::lstat(dir.c_str(), &st) != 0) throw_errno("control directory " + quoted(dir));
    }
    if (!S_ISDIR(st.st_mode))
        throw SetupError("control directory " + quoted(dir) + " is not a directory (a symlink or a file); remove it");
    if (st.st_uid != ::geteuid())
        throw SetupError("control directory " + quoted(dir) + " belongs to uid " + std::to_string(st.st_uid) +
                         ", not to you (uid " + std::to_string(::geteuid()) + "); refusing to use it");
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        throw SetupError("control directory " + quoted(dir) +
                         " is writable by group or others; refusing to use it (chmod 700 it)");
    return true;
}

std::string control_socket_path(const std::string& dir, const std::string& name) {
    std::string path = dir + "/" + name + std::string(kSocketSuffix);
    if (path.size() >= sizeof(sockaddr_un{}.sun_path))
        throw SetupError("control socket path " + quoted(path) + " is longer than a unix socket allows (" +
                         std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                         " bytes); use a shorter name or directory");
    return path;
}

std::vector<std::string> control_socket_names(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return names;
    while (const dirent* entry = ::readdir(d)) {
        std::string_view file = entry->d_name;
        if (!file.ends_with(kSocketSuffix)) continue;
        file.remove_suffix(kSocketSuffix.size());
        if (valid_vm_name(file)) names.emplace_back(file);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

ControlDirLock::ControlDirLock(const std::string& dir)
    : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) {
    if (!fd_) throw_errno("control directory " + quoted(dir));
    while (::flock(fd_.get(), LOCK_EX) != 0)
        if (errno != EINTR) throw_errno("cannot lock control directory " + quoted(dir));
}

}  // namespace vmm
