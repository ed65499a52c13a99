// 9P2000.L request handling. Layouts: Linux's net/9p/client.c (the p9_client_* format strings)
// and include/net/9p/9p.h; errors are Linux errno values in Rlerror (the guest is Linux and the
// asm-generic numbers are the same on every Linux architecture lkvm runs on).
#include "devices/p9/file_server.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "vmm/base/error.hpp"

namespace devices::p9 {
namespace {

constexpr std::uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
constexpr std::uint32_t kMinMsize = 4096;
constexpr std::size_t kMaxPath = PATH_MAX;
constexpr std::size_t kMaxXattr = 64 * 1024;  // XATTR_SIZE_MAX
constexpr std::uint32_t kSetId = S_ISUID | S_ISGID;
// The host directories a guest never sees when the export is the host's `/` (it mounts its own):
// the host's processes (environment, memory, kernel log), devices, kernel objects and run-time
// sockets, even where they are not mount points.
constexpr std::string_view kHostSystemDirs[] = {"proc", "sys", "dev", "run"};
// fchmodat2(2) (Linux 6.6), not yet in every libc's <sys/syscall.h>; the number is the same on
// every architecture (include/uapi/asm-generic/unistd.h).
constexpr long kSysFchmodat2 = 452;

// Open flags of Tlopen / Tlcreate: the client sends Linux's generic O_* values
// (include/net/9p/9p.h P9_DOTL_*), which differ from arm64's for O_DIRECTORY and O_NOFOLLOW;
// only the ones with a meaning for the server are translated, the rest are dropped.
constexpr std::uint32_t kDotlAccmode = 3, kDotlExcl = 0200, kDotlTrunc = 01000, kDotlAppend = 02000,
                        kDotlDsync = 010000, kDotlSync = 04000000;

int host_open_flags(std::uint32_t dotl) {
    int flags = 0;
    switch (dotl & kDotlAccmode) {
        case 0: flags = O_RDONLY; break;
        case 1: flags = O_WRONLY; break;
        default: flags = O_RDWR; break;  // 2, and 3 (P9_DOTL_NOACCESS) as the nearest
    }
    if (dotl & kDotlTrunc) flags |= O_TRUNC;
    if (dotl & kDotlAppend) flags |= O_APPEND;
    if (dotl & kDotlSync) flags |= O_SYNC;
    else if (dotl & kDotlDsync) flags |= O_DSYNC;
    return flags;
}

bool writes(int host_flags) { return (host_flags & O_ACCMODE) != O_RDONLY || (host_flags & (O_TRUNC | O_APPEND)); }

// openat2 beneath `dirfd`, never following a symlink, retried a bounded number of times when the
// kernel reports a concurrent rename (EAGAIN, openat2(2)).
int openat2_beneath(int dirfd, const char* path, int flags, mode_t mode, vmm::UniqueFd& out, std::uint64_t resolve) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = resolve;
    for (int attempt = 0; attempt < 8; ++attempt) {
        long fd = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0) {
            out.reset(static_cast<int>(fd));
            return 0;
        }
        if (errno != EAGAIN) return errno;
    }
    return EAGAIN;
}

int stat_fd(int fd, struct stat& st) {
    return ::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

Qid qid_of(const struct stat& st) {
    Qid q;
    if (S_ISDIR(st.st_mode)) q.type = kQidDir;
    else if (S_ISLNK(st.st_mode)) q.type = kQidSymlink;
    else q.type = kQidFile;
    q.path = st.st_ino;
    return q;
}

std::string join(const std::string& dir, std::string_view name) {
    return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

int raw_errno(int fallback) { return errno != 0 ? errno : fallback; }

}  // namespace

bool valid_name(std::string_view name) {
    return !name.empty() && name.size() <= NAME_MAX && name != "." && name != ".." &&
           name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::uint32_t fid_limit(std::uint64_t descriptors, std::size_t shares, std::uint32_t per_share) {
    if (shares == 0) return per_share;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(per_share, descriptors / shares / kDescriptorsPerFid));
}

Server::Server(vmm::UniqueFd root, ServerOptions options)
    : root_(std::move(root)), options_(options), msize_(options_.max_msize) {
    if (options_.max_msize < kMinMsize) options_.max_msize = msize_ = kMinMsize;
    struct stat export_root {
    }, host_root{};
    root_is_host_root_ = stat_fd(root_.get(), export_root) == 0 && ::stat("/", &host_root) == 0 &&
                         export_root.st_dev == host_root.st_dev && export_root.st_ino == host_root.st_ino;
}

std::unique_ptr<Server> Server::open(const std::string& dir, ServerOptions options) {
    int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) vmm::throw_errno("--9p " + dir + ": cannot open the directory");
    vmm::UniqueFd root(fd);
    // O_PATH opens need no permission; the export must be searchable (and readable) to serve.
    if (::faccessat(fd, ".", R_OK | X_OK, 0) != 0)
        vmm::throw_errno("--9p " + dir + ": the directory is not readable and searchable by lkvm");
    // Files are opened through their O_PATH descriptors' /proc/self/fd links (Server::reopen).
    if (::access("/proc/self/fd", X_OK) != 0)
        vmm::throw_errno("--9p " + dir + ": lkvm serves 9p only with /proc mounted (/proc/self/fd)");
    return std::make_unique<Server>(std::move(root), options);
}

void Server::reset() {
    clear_fids();
    msize_ = options_.max_msize;
}

bool Server::is_writable_file(const Fid& fid) const {
    return !options_.writable_file.empty() && fid.rel == options_.writable_file;
}

Server::Fid* Server::find(std::uint32_t fid) {
    auto it = fids_.find(fid);
    return it == fids_.end() ? nullptr : &it->second;
}

int Server::usable(std::uint32_t fid, Fid*& out) {
    out = find(fid);
    if (!out || out->xattr) return EBADF;
    return out->sealed ? EACCES : 0;
}

void Server::insert_fid(std::uint32_t number, Fid fid) {
    erase_fid(number);
    xattr_bytes_ += fid.xattr_value.capacity();
    fids_.emplace(number, std::move(fid));
}

void Server::erase_fid(std::uint32_t number) {
    auto it = fids_.find(number);
    if (it == fids_.end()) return;
    xattr_bytes_ -= it->second.xattr_value.capacity();
    fids_.erase(it);
}

void Server::clear_fids() {
    fids_.clear();
    xattr_bytes_ = 0;
}

bool Server::sealed_by_name(const std::string& rel, std::string_view name) const {
    return options_.one_file_system && root_is_host_root_ && rel.empty() &&
           std::find(std::begin(kHostSystemDirs), std::end(kHostSystemDirs), name) != std::end(kHostSystemDirs);
}

std::uint32_t Server::permitted_mode(std::uint32_t mode) const {
    return mode & (options_.allow_setid ? 07777u : 07777u & ~kSetId);
}

int Server::open_beneath(int dirfd, const char* path, int flags, mode_t mode, vmm::UniqueFd& out) const {
    return openat2_beneath(dirfd, path, flags, mode, out,
                           options_.one_file_system ? kResolve | RESOLVE_NO_XDEV : kResolve);
}

int Server::check_new_fid(std::uint32_t fid) const {
    if (fid == kNoFid) return EINVAL;
    if (fids_.count(fid)) return EEXIST;
    if (fids_.size() >= options_.max_fids) return EMFILE;
    return 0;
}

int Server::open_rel(const std::string& rel, int flags, vmm::UniqueFd& out) const {
    return open_beneath(root_.get(), rel.empty() ? "." : rel.c_str(), flags, 0, out);
}

int Server::reopen(int path_fd, int flags, vmm::UniqueFd& out) const {
    struct stat want {};
    if (int err = stat_fd(path_fd, want)) return err;
    // Only regular files and directories are opened: opening a FIFO blocks until its other end
    // opens (this thread is the VMM's event loop: every device and signal would wait), and a
    // device node's open already reaches a host driver.
    if (!S_ISREG(want.st_mode) && !S_ISDIR(want.st_mode)) return S_ISLNK(want.st_mode) ? ELOOP : EOPNOTSUPP;
    // O_NONBLOCK, kept: a host process's lease on the file makes the open fail (EWOULDBLOCK)
    // instead of waiting for the lease break (fcntl(2), F_SETLEASE), and a regular file whose
    // reads can wait (/proc/kmsg, a tracefs pipe) answers EAGAIN instead of holding this thread.
    // Disk file systems ignore it for regular files (open(2)).
    const int open_flags = flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    // Through the fid's own descriptor (proc_fd_link(), fs/proc/base.c): the very inode the walk
    // found, whatever its name leads to now. A second resolution of the name would open what a
    // guest (Tunlinkat + Tmknod of a FIFO) or a racing host process swapped in; without /proc
    // (Server::open checks it is there) nothing is opened.
    const std::string own = "/proc/self/fd/" + std::to_string(path_fd);
    vmm::UniqueFd fd(::open(own.c_str(), open_flags));
    if (!fd) return errno;
    out = std::move(fd);
    return 0;
}

int Server::parent_of(const Fid& fid, vmm::UniqueFd& dir, std::string& name) const {
    if (fid.rel.empty()) return EINVAL;
    const std::size_t slash = fid.rel.rfind('/');
    name = slash == std::string::npos ? fid.rel : fid.rel.substr(slash + 1);
    return open_rel(slash == std::string::npos ? std::string() : fid.rel.substr(0, slash), O_PATH | O_DIRECTORY, dir);
}

void Server::renamed(const std::string& from, const std::string& to) {
    for (auto& [number, fid] : fids_) {
        if (fid.rel == from) fid.rel = to;
        else if (fid.rel.size() > from.size() && fid.rel.compare(0, from.size(), from) == 0 &&
                 fid.rel[from.size()] == '/')
            fid.rel = to + fid.rel.substr(from.size());
    }
}

int Server::created(const Fid& dir, std::string_view name, std::uint32_t gid, Qid& qid, vmm::UniqueFd* path) {
    const std::string n(name);
    vmm::UniqueFd fd;
    if (int err = open_beneath(dir.path.get(), n.c_str(), O_PATH, 0, fd)) return err;
    // As root, the file belongs to the guest user who made it (as with QEMU's "passthrough"
    // security model); otherwise to lkvm's user.
    if (::geteuid() == 0) (void)::fchownat(fd.get(), "", dir.uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    struct stat st {};
    if (int err = stat_fd(fd.get(), st)) return err;
    qid = qid_of(st);
    if (path) *path = std::move(fd);
    return 0;
}

void Server::handle(std::span<const std::uint8_t> request, std::vector<std::uint8_t>& reply,
                    std::uint32_t reply_limit) {
    reply.clear();
    const std::uint32_t limit = std::min(reply_limit, msize_);
    // No room for even an Rlerror: the request is not executed (its outcome could not be told).
    if (limit < kHeaderSize + 4) {
        vmm::guest_error(log_, "9p: request without room for a reply (%u bytes)", reply_limit);
        return;
    }
    auto header = parse_header(request);
    if (!header) {
        // The tag is still the guest's best hope of matching this answer to its request.
        const std::uint16_t tag =
            request.size() >= kHeaderSize ? static_cast<std::uint16_t>(request[5] | request[6] << 8) : kNoTag;
        vmm::guest_error(log_, "9p: malformed message (%zu bytes, size field disagrees)", request.size());
        reply = encode_error(tag, EPROTO);
        return;
    }
    Decoder in(request.subspan(kHeaderSize));
    const Type type = static_cast<Type>(header->type + 1);
    Encoder out(reply, limit, type, header->tag);
    int err = header->size > msize_ ? EMSGSIZE : dispatch(*header, in, out);
    if (err == 0 && !in.ok()) err = EPROTO;
    if (err == 0 && !out.finish()) err = EMSGSIZE;  // the reply does not fit what the guest gave
    if (err != 0) {
        if (err == EPROTO) vmm::guest_error(log_, "9p: truncated or malformed message type %u", header->type);
        reply.clear();
        reply = encode_error(header->tag, static_cast<std::uint32_t>(err));
    }
}

int Server::dispatch(const Header& header, Decoder& in, Encoder& out) {
    switch (static_cast<Type>(header.type)) {
        case Type::Tversion: return version(in, out);
        case Type::Tattach: return attach(in, out);
        case Type::Twalk: return walk(in, out);
        case Type::Tlopen: return lopen(in, out);
        case Type::Tlcreate: return lcreate(in, out);
        case Type::Tread: return read(in, out);
        case Type::Twrite: return write(in, out);
        case Type::Tclunk: return clunk(in, out, false);
        case Type::Tremove: return clunk(in, out, true);
        case Type::Tgetattr: return getattr(in, out);
        case Type::Tsetattr: return setattr(in, out);
        case Type::Treaddir: return readdir(in, out);
        case Type::Tmkdir: return mkdir(in, out);
        case Type::Tsymlink: return symlink(in, out);
        case Type::Tmknod: return mknod(in, out);
        case Type::Treadlink: return readlink(in, out);
        case Type::Trename: return rename(in, out);
        case Type::Trenameat: return renameat(in, out);
        case Type::Tunlinkat: return unlinkat(in, out);
        case Type::Tlink: return link(in, out);
        case Type::Tstatfs: return statfs(in, out);
        case Type::Tfsync: return fsync(in, out);
        case Type::Txattrwalk: return xattrwalk(in, out);
        case Type::Tlock: return lock(in, out);
        case Type::Tgetlock: return getlock(in, out);
        case Type::Tflush:
            // Requests are answered synchronously, so the flushed one is already answered.
            in.u16();
            return 0;
        case Type::Txattrcreate:
            in.u32(), in.str(), in.u64(), in.u32();
            return in.ok() ? (options_.read_only ? EROFS : EOPNOTSUPP) : EPROTO;
        case Type::Tauth: return EOPNOTSUPP;  // no authentication: Tattach with afid NOFID
        default: return EOPNOTSUPP;
    }
}

int Server::version(Decoder& in, Encoder& out) {
    const std::uint32_t msize = in.u32();
    const std::string_view version = in.str();
    if (!in.ok()) return EPROTO;
    // A new session: every fid of the old one is gone (9P Tversion).
    clear_fids();
    msize_ = std::clamp(msize, kMinMsize, options_.max_msize);
    out.u32(msize_);
    out.str(version == "9P2000.L" ? "9P2000.L" : "unknown");
    return 0;
}

int Server::attach(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32(), afid = in.u32();
    in.str(), in.str();  // uname, aname: one export per device
    const std::uint32_t n_uname = in.u32();
    if (!in.ok()) return EPROTO;
    if (afid != kNoFid) return EINVAL;
    if (int err = check_new_fid(fid)) return err;
    if (options_.max_attaches != 0 && attaches_ >= options_.max_attaches) {
        vmm::guest_error(log_, "9p: attach refused: this export takes %u attach(es)", options_.max_attaches);
        return EACCES;
    }
    Fid f;
    if (int err = open_rel("", O_PATH | O_DIRECTORY, f.path)) return err;
    struct stat st {};
    if (int err = stat_fd(f.path.get(), st)) return err;
    f.qid = qid_of(st);
    f.uid = n_uname == kNoFid ? 0 : n_uname;
    out.qid(f.qid);
    insert_fid(fid, std::move(f));
    ++attaches_;
    return 0;
}

int Server::walk(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32(), newfid = in.u32();
    const std::uint16_t count = in.u16();
    if (!in.ok()) return EPROTO;
    if (count > kMaxWalkNames) return EINVAL;
    std::string_view names[kMaxWalkNames];
    for (std::uint16_t i = 0; i < count; ++i) names[i] = in.str();
    if (!in.ok()) return EPROTO;
    Fid* from = find(fid);  // sealed fids too: the walk refuses what they may not reach
    if (!from || from->xattr) return EBADF;
    if (newfid != fid)
        if (int err = check_new_fid(newfid)) return err;

    // Each name is resolved relative to the previous one's descriptor (so a host rename of a
    // parent changes nothing), except `..`, re-resolved from the root along the path.
    vmm::UniqueFd cur(::fcntl(from->path.get(), F_DUPFD_CLOEXEC, 0));
    if (!cur) return errno;
    std::string rel = from->rel;
    Qid qids[kMaxWalkNames];
    Qid qid = from->qid;
    bool sealed = from->sealed;
    std::uint16_t walked = 0;
    int first_error = 0;
    for (std::uint16_t i = 0; i < count; ++i) {
        const std::string_view name = names[i];
        vmm::UniqueFd next;
        std::string next_rel;
        bool next_sealed = false;
        int err = 0;
        if (qid.type != kQidDir) {
            err = ENOTDIR;
        } else if (name == "..") {
            // Sealed directories are entered only from the export's own file system.
            const std::size_t slash = rel.rfind('/');
            next_rel = slash == std::string::npos ? std::string() : rel.substr(0, slash);
            err = open_rel(next_rel, O_PATH, next);
        } else if (name == ".") {
            next_rel = rel;
            next_sealed = sealed;
            next.reset(::fcntl(cur.get(), F_DUPFD_CLOEXEC, 0));
            if (!next) err = errno;
        } else if (sealed) {
            err = EACCES;
        } else if (!valid_name(name)) {
            err = name.empty() || name.size() > NAME_MAX ? ENOENT : EINVAL;
        } else {
            next_rel = join(rel, name);
            const std::string n(name);
            if (next_rel.size() >= kMaxPath) err = ENAMETOOLONG;
            else err = open_beneath(cur.get(), n.c_str(), O_PATH, 0, next);
            if (err == EXDEV && options_.one_file_system) {
                // Another file system's mount point: the guest may see that it is a directory
                // (and mount its own file system there), never what is in it. O_PATH opens
                // nothing and the name is this component only.
                err = openat2_beneath(cur.get(), n.c_str(), O_PATH, 0, next, kResolve);
                next_sealed = true;
            } else if (err == 0 && sealed_by_name(rel, name)) {
                next_sealed = true;
            }
        }
        struct stat st {};
        if (err == 0) err = stat_fd(next.get(), st);
        if (err != 0) {
            first_error = err;
            break;
        }
        qid = qids[walked++] = qid_of(st);
        cur = std::move(next);
        rel = std::move(next_rel);
        sealed = next_sealed;
    }
    // 9P: an error on the first name is Rlerror; a later one is a short Rwalk and no newfid.
    if (walked == 0 && count != 0) return first_error;
    out.u16(walked);
    for (std::uint16_t i = 0; i < walked; ++i) out.qid(qids[i]);
    if (walked != count) return 0;
    Fid f;
    f.path = std::move(cur);
    f.rel = std::move(rel);
    f.qid = qid;
    f.uid = from->uid;
    f.sealed = sealed;
    insert_fid(newfid, std::move(f));
    return 0;
}

int Server::lopen(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32(), dotl = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    if (f->open) return EBADF;  // already open
    int flags = host_open_flags(dotl);
    // The writable file of a read-only export: no O_TRUNC (a resize), no O_APPEND (pwrite would
    // then write past the limit).
    if (options_.read_only && writes(flags) && (!is_writable_file(*f) || (flags & (O_TRUNC | O_APPEND)))) return EROFS;
    struct stat st {};
    if (int err = stat_fd(f->path.get(), st)) return err;
    if (S_ISDIR(st.st_mode)) {
        if ((flags & O_ACCMODE) != O_RDONLY) return EISDIR;
        flags = O_RDONLY | O_DIRECTORY;
    } else if (!S_ISREG(st.st_mode)) {
        // Device nodes, FIFOs and sockets are not opened on the host: a FIFO's open would block
        // this thread, and a device node would hand the guest a host device.
        return S_ISLNK(st.st_mode) ? ELOOP : EOPNOTSUPP;
    }
    if (int err = reopen(f->path.get(), flags, f->open)) return err;
    f->open_flags = flags;
    f->qid = qid_of(st);
    out.qid(f->qid);
    out.u32(0);  // iounit 0: the client uses msize
    return 0;
}

int Server::lcreate(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::string_view name = in.str();
    const std::uint32_t dotl = in.u32(), mode = in.u32(), gid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* dir = nullptr;
    if (int err = usable(fid, dir)) return err;
    if (dir->open) return EBADF;
    if (dir->qid.type != kQidDir) return ENOTDIR;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    const std::string rel = join(dir->rel, name);
    if (rel.size() >= kMaxPath) return ENAMETOOLONG;
    const std::string n(name);
    const int flags = host_open_flags(dotl);
    // open(O_CREAT) of a name that exists opens what is there: a device node's open reaches its
    // host driver, a FIFO's blocks. So the name's type is looked at first (O_PATH opens nothing):
    // an existing file is opened through that descriptor, only if it is a regular file, and a
    // new one is made with O_EXCL, which never opens a name that appeared in between (EEXIST).
    vmm::UniqueFd path, file;
    int err = open_beneath(dir->path.get(), n.c_str(), O_PATH, 0, path);
    const bool made = err == ENOENT;
    if (made) {
        err = open_beneath(dir->path.get(), n.c_str(), flags | O_CREAT | O_EXCL | O_NOCTTY | O_NONBLOCK,
                           permitted_mode(mode), file);
    } else if (err == 0) {
        if (dotl & kDotlExcl) return EEXIST;
        struct stat st {};
        if (int e = stat_fd(path.get(), st)) return e;
        if (S_ISDIR(st.st_mode)) return EISDIR;
        err = reopen(path.get(), flags, file);  // a regular file; EOPNOTSUPP or ELOOP otherwise
    }
    if (err != 0) return err;
    Qid qid;
    if (made) {
        // Given to the guest user when we are root (an existing file keeps its owner).
        if (int e = created(*dir, name, gid, qid, &path)) return e;
    } else {
        struct stat st {};
        if (int e = stat_fd(path.get(), st)) return e;
        qid = qid_of(st);
    }
    // 9P: the directory fid now stands for the new, open file.
    dir->path = std::move(path);
    dir->open = std::move(file);
    dir->open_flags = flags & ~O_TRUNC;
    dir->rel = rel;
    dir->qid = qid;
    out.qid(qid);
    out.u32(0);
    return 0;
}

int Server::read(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::uint64_t offset = in.u64();
    const std::uint32_t count = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = find(fid);
    if (!f) return EBADF;
    const std::size_t count_at = out.size();
    out.u32(0);
    const std::uint32_t n = std::min(count, out.room());
    if (f->xattr) {
        const std::uint64_t size = f->xattr_value.size();
        const std::uint64_t from = std::min(offset, size);
        const std::uint64_t take = std::min<std::uint64_t>(n, size - from);
        out.bytes({f->xattr_value.data() + from, static_cast<std::size_t>(take)});
        out.patch_u32(count_at, static_cast<std::uint32_t>(take));
        return 0;
    }
    if (!f->open || (f->open_flags & O_ACCMODE) == O_WRONLY) return EBADF;
    if (f->open_flags & O_DIRECTORY) return EISDIR;
    if (offset > static_cast<std::uint64_t>(INT64_MAX)) return EINVAL;
    std::uint8_t* data = out.reserve(n);
    if (!data && n != 0) return EMSGSIZE;
    const ssize_t got = n == 0 ? 0 : ::pread(f->open.get(), data, n, static_cast<off_t>(offset));
    if (got < 0) return raw_errno(EIO);
    out.truncate(count_at + 4 + static_cast<std::size_t>(got));
    out.patch_u32(count_at, static_cast<std::uint32_t>(got));
    return 0;
}

int Server::write(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::uint64_t offset = in.u64();
    const std::uint32_t count = in.u32();
    const std::span<const std::uint8_t> data = in.bytes(count);
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    const bool capped = options_.read_only;  // only the writable file is open for writing then
    if (capped && !is_writable_file(*f)) return EROFS;
    if (!f->open || (f->open_flags & O_ACCMODE) == O_RDONLY) return EBADF;
    if (offset > static_cast<std::uint64_t>(INT64_MAX) || count > INT64_MAX - offset) return EFBIG;
    std::size_t length = data.size();
    if (capped) {
        // As RLIMIT_FSIZE: what fits below the limit is written, nothing at or past it.
        if (count != 0 && offset >= options_.writable_limit) return EFBIG;
        if (offset < options_.writable_limit)
            length = static_cast<std::size_t>(std::min<std::uint64_t>(length, options_.writable_limit - offset));
    }
    const ssize_t put = length == 0 ? 0 : ::pwrite(f->open.get(), data.data(), length, static_cast<off_t>(offset));
    if (put < 0) return raw_errno(EIO);
    out.u32(static_cast<std::uint32_t>(put));
    return 0;
}

int Server::clunk(Decoder& in, Encoder& /*out*/, bool remove) {
    const std::uint32_t fid = in.u32();
    if (!in.ok()) return EPROTO;
    auto it = fids_.find(fid);
    if (it == fids_.end()) return EBADF;
    int err = 0;
    if (remove) {
        // Tremove clunks the fid even when the removal fails (9P remove(5)).
        if (options_.read_only) err = EROFS;
        else if (it->second.sealed) err = EACCES;
        else {
            vmm::UniqueFd dir;
            std::string name;
            err = parent_of(it->second, dir, name);
            if (err == 0 && ::unlinkat(dir.get(), name.c_str(), it->second.qid.type == kQidDir ? AT_REMOVEDIR : 0) != 0)
                err = errno;
        }
    }
    erase_fid(fid);
    return err;
}

int Server::getattr(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    in.u64();  // request_mask: the basic set is always returned
    if (!in.ok()) return EPROTO;
    Fid* f = find(fid);  // sealed fids too: their attributes are what the guest may see of them
    if (!f || f->xattr) return EBADF;
    struct stat st {};
    if (int err = stat_fd(f->path.get(), st)) return err;
    constexpr std::uint64_t kStatsBasic = 0x7ff;  // P9_STATS_BASIC: mode..blocks
    out.u64(kStatsBasic);
    out.qid(qid_of(st));
    out.u32(st.st_mode);
    out.u32(st.st_uid);
    out.u32(st.st_gid);
    out.u64(st.st_nlink);
    out.u64(st.st_rdev);
    out.u64(static_cast<std::uint64_t>(st.st_size));
    out.u64(static_cast<std::uint64_t>(st.st_blksize));
    out.u64(static_cast<std::uint64_t>(st.st_blocks));
    for (const timespec& t : {st.st_atim, st.st_mtim, st.st_ctim}) {
        out.u64(static_cast<std::uint64_t>(t.tv_sec));
        out.u64(static_cast<std::uint64_t>(t.tv_nsec));
    }
    for (int i = 0; i < 4; ++i) out.u64(0);  // btime sec/nsec, gen, data_version
    return 0;
}

int Server::setattr(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t fid = in.u32(), valid = in.u32(), mode = in.u32(), uid = in.u32(), gid = in.u32();
    const std::uint64_t size = in.u64(), atime_sec = in.u64(), atime_nsec = in.u64(), mtime_sec = in.u64(),
                        mtime_nsec = in.u64();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    if (options_.read_only) return EROFS;
    // P9_ATTR_* (include/net/9p/9p.h).
    constexpr std::uint32_t kMode = 1, kUid = 2, kGid = 4, kSize = 8, kAtime = 16, kMtime = 32, kAtimeSet = 128,
                            kMtimeSet = 256;
    const int fd = f->path.get();
    if (valid & kMode) {
        // A guest may not make a host file set-user-ID or set-group-ID (ServerOptions).
        if (permitted_mode(mode) != (mode & 07777)) return EPERM;
        if (::syscall(kSysFchmodat2, fd, "", mode & 07777, AT_EMPTY_PATH) != 0) {
            if (errno != ENOSYS) return errno;
            if (f->qid.type == kQidSymlink) return EOPNOTSUPP;
            vmm::UniqueFd file;
            if (int err = reopen(fd, O_RDONLY, file)) return err;
            if (::fchmod(file.get(), mode & 07777) != 0) return errno;
        }
    }
    if (valid & (kUid | kGid)) {
        if (::fchownat(fd, "", (valid & kUid) ? uid : static_cast<uid_t>(-1),
                       (valid & kGid) ? gid : static_cast<gid_t>(-1), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
            return errno;
    }
    if (valid & kSize) {
        if (f->qid.type != kQidFile) return EINVAL;
        if (size > static_cast<std::uint64_t>(INT64_MAX)) return EFBIG;
        int target = -1;
        vmm::UniqueFd file;
        if (f->open && (f->open_flags & O_ACCMODE) != O_RDONLY) target = f->open.get();
        else if (int err = reopen(fd, O_WRONLY, file)) return err;
        else target = file.get();
        if (::ftruncate(target, static_cast<off_t>(size)) != 0) return errno;
    }
    if (valid & (kAtime | kMtime)) {
        timespec times[2];
        times[0] = {0, UTIME_OMIT};
        times[1] = {0, UTIME_OMIT};
        if (valid & kAtime)
            times[0] = (valid & kAtimeSet)
                           ? timespec{static_cast<time_t>(atime_sec), static_cast<long>(atime_nsec % 1000000000)}
                           : timespec{0, UTIME_NOW};
        if (valid & kMtime)
            times[1] = (valid & kMtimeSet)
                           ? timespec{static_cast<time_t>(mtime_sec), static_cast<long>(mtime_nsec % 1000000000)}
                           : timespec{0, UTIME_NOW};
        if (::utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
    }
    return 0;
}

int Server::readdir(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::uint64_t offset = in.u64();
    const std::uint32_t count = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    if (!f->open || !(f->open_flags & O_DIRECTORY)) return EBADF;
    if (offset > static_cast<std::uint64_t>(INT64_MAX)) return EINVAL;
    if (::lseek(f->open.get(), static_cast<off_t>(offset), SEEK_SET) < 0) return errno;
    const std::size_t count_at = out.size();
    out.u32(0);
    const std::uint32_t room = std::min(count, out.room());
    std::uint32_t used = 0;
    alignas(8) std::uint8_t buffer[16 * 1024];
    // Each pass reads at most one buffer of entries; an entry that does not fit ends the reply and
    // is read again by the next Treaddir (which seeks to the last returned offset).
    bool full = false;
    while (!full) {
        const long n = ::syscall(SYS_getdents64, f->open.get(), buffer, sizeof buffer);
        if (n < 0) return used == 0 ? errno : 0;
        if (n == 0) break;
        for (long pos = 0; pos < n;) {
            const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + pos);
            pos += entry->d_reclen;
            const std::string_view name(entry->d_name);
            const std::uint32_t size = kQidSize + 8 + 1 + 2 + static_cast<std::uint32_t>(name.size());
            if (size > room - used) {
                full = true;
                break;
            }
            Qid q;
            q.type = entry->d_type == DT_DIR ? kQidDir : entry->d_type == DT_LNK ? kQidSymlink : kQidFile;
            q.path = entry->d_ino;
            out.qid(q);
            out.u64(static_cast<std::uint64_t>(entry->d_off));
            out.u8(entry->d_type);
            out.str(name);
            used += size;
        }
    }
    out.patch_u32(count_at, used);
    return 0;
}

int Server::mkdir(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::string_view name = in.str();
    const std::uint32_t mode = in.u32(), gid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* dir = nullptr;
    if (int err = usable(fid, dir)) return err;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    if (::mkdirat(dir->path.get(), std::string(name).c_str(), permitted_mode(mode)) != 0) return errno;
    Qid qid;
    if (int err = created(*dir, name, gid, qid)) return err;
    out.qid(qid);
    return 0;
}

int Server::symlink(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::string_view name = in.str(), target = in.str();
    const std::uint32_t gid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* dir = nullptr;
    if (int err = usable(fid, dir)) return err;
    // The target is only data: the server never follows it.
    if (!valid_name(name) || target.empty() || target.find('\0') != std::string_view::npos) return EINVAL;
    if (options_.read_only) return EROFS;
    if (::symlinkat(std::string(target).c_str(), dir->path.get(), std::string(name).c_str()) != 0) return errno;
    Qid qid;
    if (int err = created(*dir, name, gid, qid)) return err;
    out.qid(qid);
    return 0;
}

int Server::mknod(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::string_view name = in.str();
    const std::uint32_t mode = in.u32(), major = in.u32(), minor = in.u32(), gid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* dir = nullptr;
    if (int err = usable(fid, dir)) return err;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    // No device nodes on the host for the guest (they would reach host devices); FIFOs, sockets
    // and regular files are harmless.
    const std::uint32_t kind = mode & S_IFMT;
    if (kind != S_IFIFO && kind != S_IFSOCK && kind != S_IFREG) return EPERM;
    if (::mknodat(dir->path.get(), std::string(name).c_str(), kind | permitted_mode(mode), makedev(major, minor)) != 0)
        return errno;
    Qid qid;
    if (int err = created(*dir, name, gid, qid)) return err;
    out.qid(qid);
    return 0;
}

int Server::readlink(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    char target[PATH_MAX];
    const ssize_t n = ::readlinkat(f->path.get(), "", target, sizeof target);
    if (n < 0) return errno == ENOENT ? EINVAL : errno;
    out.str({target, static_cast<std::size_t>(n)});
    return 0;
}

int Server::rename(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t fid = in.u32(), dfid = in.u32();
    const std::string_view name = in.str();
    if (!in.ok()) return EPROTO;
    Fid *f = nullptr, *dir = nullptr;
    if (int err = usable(fid, f)) return err;
    if (int err = usable(dfid, dir)) return err;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    vmm::UniqueFd from_dir;
    std::string from_name;
    if (int err = parent_of(*f, from_dir, from_name)) return err;
    const std::string to = join(dir->rel, name);
    if (to.size() >= kMaxPath) return ENAMETOOLONG;
    if (::renameat(from_dir.get(), from_name.c_str(), dir->path.get(), std::string(name).c_str()) != 0) return errno;
    renamed(f->rel, to);
    return 0;
}

int Server::renameat(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t old_fid = in.u32();
    const std::string_view old_name = in.str();
    const std::uint32_t new_fid = in.u32();
    const std::string_view new_name = in.str();
    if (!in.ok()) return EPROTO;
    Fid *old_dir = nullptr, *new_dir = nullptr;
    if (int err = usable(old_fid, old_dir)) return err;
    if (int err = usable(new_fid, new_dir)) return err;
    if (!valid_name(old_name) || !valid_name(new_name)) return EINVAL;
    if (options_.read_only) return EROFS;
    const std::string to = join(new_dir->rel, new_name);
    if (to.size() >= kMaxPath) return ENAMETOOLONG;
    if (::renameat(old_dir->path.get(), std::string(old_name).c_str(), new_dir->path.get(),
                   std::string(new_name).c_str()) != 0)
        return errno;
    renamed(join(old_dir->rel, old_name), to);
    return 0;
}

int Server::unlinkat(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t fid = in.u32();
    const std::string_view name = in.str();
    const std::uint32_t flags = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* dir = nullptr;
    if (int err = usable(fid, dir)) return err;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    // The client passes AT_REMOVEDIR (0x200, the same value everywhere) and nothing else.
    if (::unlinkat(dir->path.get(), std::string(name).c_str(), (flags & AT_REMOVEDIR) ? AT_REMOVEDIR : 0) != 0)
        return errno;
    return 0;
}

int Server::link(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t dfid = in.u32(), fid = in.u32();
    const std::string_view name = in.str();
    if (!in.ok()) return EPROTO;
    Fid *dir = nullptr, *f = nullptr;
    if (int err = usable(dfid, dir)) return err;
    if (int err = usable(fid, f)) return err;
    if (!valid_name(name)) return EINVAL;
    if (options_.read_only) return EROFS;
    if (f->qid.type == kQidDir) return EPERM;
    const std::string n(name);
    // By descriptor (needs CAP_DAC_READ_SEARCH), else by the fid's name in its parent (linkat
    // does not follow a symlink in the last component without AT_SYMLINK_FOLLOW).
    if (::linkat(f->path.get(), "", dir->path.get(), n.c_str(), AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT && errno != EPERM) return errno;
    vmm::UniqueFd from_dir;
    std::string from_name;
    if (int err = parent_of(*f, from_dir, from_name)) return err;
    if (::linkat(from_dir.get(), from_name.c_str(), dir->path.get(), n.c_str(), 0) != 0) return errno;
    return 0;
}

int Server::statfs(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    struct statfs st {};
    if (::fstatfs(f->path.get(), &st) != 0) return errno;
    std::uint64_t fsid = 0;
    std::memcpy(&fsid, &st.f_fsid, std::min(sizeof fsid, sizeof st.f_fsid));
    out.u32(static_cast<std::uint32_t>(st.f_type));
    out.u32(static_cast<std::uint32_t>(st.f_bsize));
    out.u64(st.f_blocks);
    out.u64(st.f_bfree);
    out.u64(st.f_bavail);
    out.u64(st.f_files);
    out.u64(st.f_ffree);
    out.u64(fsid);
    out.u32(static_cast<std::uint32_t>(st.f_namelen));
    return 0;
}

int Server::fsync(Decoder& in, Encoder& /*out*/) {
    const std::uint32_t fid = in.u32(), datasync = in.u32();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    if (!f->open) return 0;  // nothing written through this fid
    if ((datasync ? ::fdatasync(f->open.get()) : ::fsync(f->open.get())) != 0) return errno;
    return 0;
}

int Server::xattrwalk(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32(), newfid = in.u32();
    const std::string_view name = in.str();
    if (!in.ok()) return EPROTO;
    Fid* f = nullptr;
    if (int err = usable(fid, f)) return err;
    if (newfid != fid)
        if (int err = check_new_fid(newfid)) return err;
    if (name.find('\0') != std::string_view::npos || name.size() > XATTR_NAME_MAX) return EINVAL;
    // Symlinks carry no user xattrs on Linux; everything else is read through a real descriptor
    // (f*xattr() do not take O_PATH ones).
    if (f->qid.type == kQidSymlink) return name.empty() ? (out.u64(0), 0) : ENODATA;
    vmm::UniqueFd file;
    int fd = f->open ? f->open.get() : -1;
    if (fd < 0) {
        if (int err = reopen(f->path.get(), f->qid.type == kQidDir ? O_RDONLY | O_DIRECTORY : O_RDONLY, file))
            return err;
        fd = file.get();
    }
    // Read into the one reusable buffer; the fid keeps a copy of exactly what was read, and all
    // the copies together stay within max_xattr_bytes (each fid could otherwise pin 64 KiB).
    xattr_buffer_.resize(kMaxXattr);
    const std::string n(name);
    const ssize_t got = name.empty()
                            ? ::flistxattr(fd, reinterpret_cast<char*>(xattr_buffer_.data()), xattr_buffer_.size())
                            : ::fgetxattr(fd, n.c_str(), xattr_buffer_.data(), xattr_buffer_.size());
    if (got < 0) return errno;
    const std::size_t size = static_cast<std::size_t>(got);
    if (xattr_bytes_ > options_.max_xattr_bytes || size > options_.max_xattr_bytes - xattr_bytes_) return ENOMEM;
    std::vector<std::uint8_t> value(xattr_buffer_.begin(), xattr_buffer_.begin() + got);
    Fid x;
    x.path.reset(::fcntl(f->path.get(), F_DUPFD_CLOEXEC, 0));
    if (!x.path) return errno;
    x.rel = f->rel;
    x.qid = f->qid;
    x.uid = f->uid;
    x.xattr = true;
    x.xattr_value = std::move(value);
    out.u64(x.xattr_value.size());
    insert_fid(newfid, std::move(x));
    return 0;
}

namespace {
// P9_LOCK_TYPE_* and P9_LOCK_* status (include/net/9p/9p.h).
constexpr std::uint8_t kLockRead = 0, kLockWrite = 1, kLockUnlock = 2;
constexpr std::uint8_t kLockSuccess = 0, kLockBlocked = 1, kLockError = 2;

bool to_flock(std::uint8_t type, std::uint64_t start, std::uint64_t length, struct flock& fl) {
    if (type != kLockRead && type != kLockWrite && type != kLockUnlock) return false;
    if (start > static_cast<std::uint64_t>(INT64_MAX)) return false;
    fl = {};
    fl.l_type = type == kLockRead ? F_RDLCK : type == kLockWrite ? F_WRLCK : F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(start);
    // 0 = to the end of the file; a length past INT64_MAX means the same.
    fl.l_len = length > static_cast<std::uint64_t>(INT64_MAX) - start ? 0 : static_cast<off_t>(length);
    return true;
}
}  // namespace

int Server::lock(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::uint8_t type = in.u8();
    in.u32();  // flags: P9_LOCK_FLAGS_BLOCK; the client retries on BLOCKED itself
    const std::uint64_t start = in.u64(), length = in.u64();
    in.u32(), in.str();  // proc_id, client_id
    if (!in.ok()) return EPROTO;
    Fid* f = find(fid);
    if (!f || f->xattr || !f->open) return EBADF;
    struct flock fl {};
    if (!to_flock(type, start, length, fl)) return EINVAL;
    // A read-only share has no effect on the host, locks included (a host process must still be
    // able to write-lock its files): granted without a host lock. Guest processes still exclude
    // each other: the client takes the lock in the guest's own lock table before it asks the
    // server (v9fs_file_do_lock(), fs/9p/vfs_file.c).
    if (options_.read_only) {
        out.u8(kLockSuccess);
        return 0;
    }
    // Open-file-description locks: one owner per fid, never blocking this thread.
    std::uint8_t status = kLockSuccess;
    if (::fcntl(f->open.get(), F_OFD_SETLK, &fl) != 0)
        status = (errno == EAGAIN || errno == EACCES) ? kLockBlocked : kLockError;
    out.u8(status);
    return 0;
}

int Server::getlock(Decoder& in, Encoder& out) {
    const std::uint32_t fid = in.u32();
    const std::uint8_t type = in.u8();
    const std::uint64_t start = in.u64(), length = in.u64();
    const std::uint32_t proc_id = in.u32();
    const std::string_view client_id = in.str();
    if (!in.ok()) return EPROTO;
    Fid* f = find(fid);
    if (!f || f->xattr || !f->open) return EBADF;
    struct flock fl {};
    if (!to_flock(type, start, length, fl) || type == kLockUnlock) return EINVAL;
    if (::fcntl(f->open.get(), F_OFD_GETLK, &fl) != 0) return errno;
    out.u8(fl.l_type == F_RDLCK ? kLockRead : fl.l_type == F_WRLCK ? kLockWrite : kLockUnlock);
    out.u64(static_cast<std::uint64_t>(fl.l_start));
    out.u64(static_cast<std::uint64_t>(fl.l_len));
    out.u32(fl.l_type == F_UNLCK ? proc_id : static_cast<std::uint32_t>(fl.l_pid));
    out.str(client_id);
    return 0;
}

}  // namespace devices::p9
