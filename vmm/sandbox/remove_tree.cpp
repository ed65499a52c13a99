#include "vmm/sandbox/remove_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "vmm/base/unique_fd.hpp"

namespace vmm::sandbox {
namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

struct Entry {
    std::string name;
    bool directory = false;
};

// The entries of the directory `dir` (without "." and ".."), read through a descriptor of its own
// that is closed before returning. -1 and errno on failure.
int list(int dir, std::vector<Entry>& out) {
    out.clear();
    const int fd = ::openat(dir, ".", kDirFlags);
    if (fd < 0) return -1;
    DIR* stream = ::fdopendir(fd);
    if (!stream) {
        const int error = errno;
        ::close(fd);
        errno = error;
        return -1;
    }
    errno = 0;
    while (const dirent* e = ::readdir(stream)) {
        const std::string_view name = e->d_name;
        if (name == "." || name == "..") continue;
        bool directory = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {  // file systems without d_type: ask
            struct stat st {};
            directory = ::fstatat(dir, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        out.push_back({std::string(name), directory});
    }
    const int error = errno;
    ::closedir(stream);
    errno = error;
    return error == 0 ? 0 : -1;
}

// A directory we passed on the way down: how to recognise it again through "..", and its name.
struct Level {
    dev_t dev;
    ino_t ino;
    std::string name;
};

// `action` on `name` in `dir`; when refused for want of permission on `dir` (a guest may have made
// a directory read-only), once more after giving its owner full access to it.
template <typename Action>
bool retry_with_access(int dir, Action action) {
    if (action()) return true;
    if (errno != EACCES && errno != EPERM) return false;
    if (::fchmod(dir, S_IRWXU) != 0) return false;
    return action();
}

}  // namespace

std::string remove_tree(const std::string& path) {
    const auto failed = [&](const std::string& what, const std::vector<Level>& below, int error) {
        std::string where = path;
        if (!below.empty()) where += "/.../" + below.back().name + " (depth " + std::to_string(below.size()) + ")";
        return "cannot remove '" + path + "': " + what + " in '" + where + "': " + std::strerror(error);
    };
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? std::string() : failed("lstat", {}, errno);
    if (!S_ISDIR(st.st_mode))
        return ::unlink(path.c_str()) == 0 || errno == ENOENT ? std::string() : failed("unlink", {}, errno);

    UniqueFd current(::open(path.c_str(), kDirFlags));
    if (!current) return failed("open", {}, errno);
    // Depth first: empty the current directory of everything but non-empty subdirectories; enter
    // the first of those; when the current one is empty, go back up through ".." and remove it
    // from there. Each directory is entered once (it is empty when we leave it), so this ends;
    // one that still cannot be removed once emptied (a file system hiding entries) is an error.
    std::vector<Level> above;
    std::vector<Entry> entries;
    struct stat left {};  // the directory we last came up from
    bool came_up = false;
    for (;;) {
        if (list(current.get(), entries) != 0) return failed("reading the directory", above, errno);
        UniqueFd child;
        std::string child_name;
        for (const Entry& e : entries) {
            const char* name = e.name.c_str();
            if (!e.directory) {
                if (!retry_with_access(current.get(),
                                       [&] { return ::unlinkat(current.get(), name, 0) == 0 || errno == ENOENT; }))
                    return failed("unlink '" + e.name + "'", above, errno);
                continue;
            }
            if (retry_with_access(current.get(), [&] {
                    return ::unlinkat(current.get(), name, AT_REMOVEDIR) == 0 || errno == ENOENT;
                }))
                continue;
            if (errno != ENOTEMPTY && errno != EEXIST) return failed("rmdir '" + e.name + "'", above, errno);
            child = UniqueFd(::openat(current.get(), name, kDirFlags));
            if (!child && (errno == EACCES || errno == EPERM) && ::fchmodat(current.get(), name, S_IRWXU, 0) == 0)
                child = UniqueFd(::openat(current.get(), name, kDirFlags));
            if (!child) return failed("open '" + e.name + "'", above, errno);
            struct stat st_child {};
            if (::fstat(child.get(), &st_child) != 0) return failed("fstat '" + e.name + "'", above, errno);
            if (came_up && st_child.st_dev == left.st_dev && st_child.st_ino == left.st_ino)
                return failed("rmdir '" + e.name + "' (emptied)", above, ENOTEMPTY);
            child_name = e.name;
            break;
        }
        if (child) {
            struct stat here {};
            if (::fstat(current.get(), &here) != 0) return failed("fstat", above, errno);
            above.push_back({here.st_dev, here.st_ino, std::move(child_name)});
            current = std::move(child);
            continue;
        }
        if (above.empty()) break;  // the top directory is empty
        // Up through "..": only to the directory we came from (nothing else moves it: the guest
        // is gone and the tree is lkvm's user's alone).
        if (::fstat(current.get(), &left) != 0) return failed("fstat", above, errno);
        came_up = true;
        UniqueFd parent(::openat(current.get(), "..", kDirFlags));
        struct stat up {};
        if (!parent || ::fstat(parent.get(), &up) != 0) return failed("open '..'", above, errno);
        if (up.st_dev != above.back().dev || up.st_ino != above.back().ino)
            return failed("going back up", above, ESTALE);
        above.pop_back();
        current = std::move(parent);
    }
    current = UniqueFd();
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return failed("rmdir", {}, errno);
    return {};
}

}  // namespace vmm::sandbox
