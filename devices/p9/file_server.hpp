// A 9P2000.L file server over one host directory (the export), for Linux's v9fs client
// (fs/9p/, net/9p/ in the kernel). Transport-independent: virtio/p9.cpp feeds it one request and
// takes one reply; tests and the fuzzer call it directly.
//
// Confinement: the export root is an O_PATH descriptor; every fid holds an O_PATH descriptor of
// its file, and every name the guest supplies is resolved with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS) relative to a fid's descriptor, one component at a
// time (names containing '/' are refused). The server never follows a symlink: 9P2000.L clients
// resolve symlinks themselves (Treadlink), so `..`, absolute or relative symlinks (planted by the
// guest or swapped in by a racing host process) and /proc magic links cannot lead outside. `..`
// is walked by re-resolving the fid's path from the root, beneath it. Names are only ever created,
// renamed, linked and removed with *at() calls on a fid's directory descriptor.
//
// Blocking: a file is opened only after its type is checked on an O_PATH descriptor, only when it
// is a regular file or a directory, and through that descriptor; the open file stays O_NONBLOCK,
// so a FIFO, a device node or a /proc file such as kmsg never holds the serving thread.
//
// Host resources: each fid holds at most kDescriptorsPerFid host descriptors and max_fids bounds
// the fids; xattr values are held in exactly their size, max_xattr_bytes in all.
//
// Host I/O is synchronous on the caller's thread (the virtio notify path: the vCPU or event-loop
// thread), a deliberate first version: a slow host file system stalls the guest's 9p requests.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "devices/p9/wire.hpp"
#include "virtio/p9_handler.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

namespace devices::p9 {

struct ServerOptions {
    bool read_only = false;  // every request that would change the export gets EROFS
    // With read_only: the one file (a name in the export's root) the guest may still open for
    // writing and write, its first `writable_limit` bytes only, never resize, remove or replace
    // (lkvm sandbox's status file, vmm/sandbox/session.hpp).
    std::string writable_file;
    std::uint64_t writable_limit = 0;
    // Tattach requests granted for the server's life (Tversion and device resets do not restore
    // them); 0: no limit. lkvm sandbox's init attaches once, so that nothing else can.
    std::uint32_t max_attaches = 0;
    // Set-user-ID and set-group-ID bits are dropped from the modes of created files and refused
    // by Tsetattr unless this is set (`--9p DIR,TAG,suid`): with them, any host user who can run
    // a file in the export runs the guest's code as the file's owner (root, when lkvm is root).
    bool allow_setid = false;
    // Walks stay on the export's file system (openat2 RESOLVE_NO_XDEV): a mount point below the
    // export is a sealed directory (its attributes; nothing in it can be listed, opened or walked
    // to). When the export is the host's `/`, its proc, sys, dev and run are sealed as well,
    // whether or not they are mount points.
    bool one_file_system = false;
    std::uint32_t max_fids = 4096;                // per guest; each fid holds at most kDescriptorsPerFid
    std::uint32_t max_msize = 512 * 1024 + 4096;  // largest message negotiated by Tversion
    // Xattr values held by xattr fids (Txattrwalk until Tclunk), all together: ENOMEM beyond.
    std::size_t max_xattr_bytes = 2 * 1024 * 1024;
};

// Host descriptors a fid holds at most: its O_PATH descriptor and, once opened, the open file.
inline constexpr std::uint32_t kDescriptorsPerFid = 2;

// The fid limit of each of `shares` 9p devices when they may hold `descriptors` host descriptors
// in all (vmm/base/descriptor_limit.hpp): an even split, at most `per_share`.
std::uint32_t fid_limit(std::uint64_t descriptors, std::size_t shares,
                        std::uint32_t per_share = ServerOptions{}.max_fids);

class Server final : public virtio::P9Handler {
public:
    // `root`: an O_PATH (or O_RDONLY) descriptor of the export directory.
    Server(vmm::UniqueFd root, ServerOptions options);
    // Opens `dir` as the export; throws vmm::SetupError naming it when it cannot be used.
    static std::unique_ptr<Server> open(const std::string& dir, ServerOptions options);

    // Handles one complete request and builds its reply (at most `reply_limit` bytes) in `reply`.
    // With room for an Rlerror (11 bytes) a reply is always produced; with less the request is
    // not executed and `reply` stays empty.
    void handle(std::span<const std::uint8_t> request, std::vector<std::uint8_t>& reply,
                std::uint32_t reply_limit) override;

    // Device reset: every fid is clunked, msize returns to the default.
    void reset() override;

    std::uint32_t msize() const override { return msize_; }
    std::size_t fid_count() const { return fids_.size(); }
    // Bytes the xattr fids' values take (their capacity), bounded by max_xattr_bytes.
    std::size_t xattr_bytes() const { return xattr_bytes_; }
    const ServerOptions& options() const { return options_; }

private:
    struct Fid {
        vmm::UniqueFd path;  // O_PATH|O_NOFOLLOW descriptor of the file
        std::string rel;     // path below the export ("" = root), kept for `..` and reopening
        Qid qid;
        std::uint32_t uid = 0;  // n_uname of the attach (owner of what the fid creates as root)
        vmm::UniqueFd open;     // after Tlopen / Tlcreate
        int open_flags = -1;    // host O_* flags of `open`
        bool xattr = false;     // an xattr fid from Txattrwalk: reads come from `xattr_value`
        std::vector<std::uint8_t> xattr_value;
        // Another file system's mount point (or the host's /proc, ...) under one_file_system:
        // attributes only (Tgetattr, Tclunk, Twalk of none or ".."); EACCES for anything else.
        bool sealed = false;
    };

    int dispatch(const Header& header, Decoder& in, Encoder& out);
    int version(Decoder& in, Encoder& out);
    int attach(Decoder& in, Encoder& out);
    int walk(Decoder& in, Encoder& out);
    int lopen(Decoder& in, Encoder& out);
    int lcreate(Decoder& in, Encoder& out);
    int read(Decoder& in, Encoder& out);
    int write(Decoder& in, Encoder& out);
    int clunk(Decoder& in, Encoder& out, bool remove);
    int getattr(Decoder& in, Encoder& out);
    int setattr(Decoder& in, Encoder& out);
    int readdir(Decoder& in, Encoder& out);
    int mkdir(Decoder& in, Encoder& out);
    int symlink(Decoder& in, Encoder& out);
    int mknod(Decoder& in, Encoder& out);
    int readlink(Decoder& in, Encoder& out);
    int rename(Decoder& in, Encoder& out);
    int renameat(Decoder& in, Encoder& out);
    int unlinkat(Decoder& in, Encoder& out);
    int link(Decoder& in, Encoder& out);
    int statfs(Decoder& in, Encoder& out);
    int fsync(Decoder& in, Encoder& out);
    int xattrwalk(Decoder& in, Encoder& out);
    int lock(Decoder& in, Encoder& out);
    int getlock(Decoder& in, Encoder& out);

    Fid* find(std::uint32_t fid);
    // The fid for a request that reads or changes the file or what is in it: EBADF for an
    // unknown or xattr fid, EACCES for a sealed one.
    int usable(std::uint32_t fid, Fid*& out);
    // Every fid goes through these, which keep xattr_bytes_.
    void insert_fid(std::uint32_t number, Fid fid);
    void erase_fid(std::uint32_t number);
    void clear_fids();
    // A name met in a walk beneath `dir` (path `rel` below the root) that one_file_system seals.
    bool sealed_by_name(const std::string& rel, std::string_view name) const;
    // Inserts a new fid; EBADF-style errors: EEXIST when in use, EMFILE at the limit.
    int check_new_fid(std::uint32_t fid) const;
    // openat2 beneath `dirfd` with the server's resolve flags (never a symlink; never another
    // file system under one_file_system: EXDEV).
    int open_beneath(int dirfd, const char* path, int flags, mode_t mode, vmm::UniqueFd& out) const;
    // Opens `rel` (a path below the root, "" = the root) beneath the root: O_PATH by default.
    int open_rel(const std::string& rel, int flags, vmm::UniqueFd& out) const;
    // The inode of `path_fd` (a fid's O_PATH descriptor) opened with `flags` through that
    // descriptor, never by its name again (which may now lead to a FIFO, a device node or another
    // file): its type is checked first, and only regular files and directories are opened
    // (EOPNOTSUPP, ELOOP otherwise). The descriptor stays O_NONBLOCK.
    int reopen(int path_fd, int flags, vmm::UniqueFd& out) const;
    // The mode bits a guest may give a file: set-user-ID and set-group-ID only with allow_setid.
    std::uint32_t permitted_mode(std::uint32_t mode) const;
    // True when the fid is options_.writable_file of a read-only export.
    bool is_writable_file(const Fid& fid) const;
    // The directory holding the fid's file and its last component (EINVAL for the root).
    int parent_of(const Fid& fid, vmm::UniqueFd& dir, std::string& name) const;
    // After a successful rename of `from` to `to` (paths below the root), fids below `from` follow.
    void renamed(const std::string& from, const std::string& to);
    // A file just created as `name` in `dir`: owned by the fid's uid and `gid` when we are root.
    int created(const Fid& dir, std::string_view name, std::uint32_t gid, Qid& qid, vmm::UniqueFd* path = nullptr);

    vmm::UniqueFd root_;
    ServerOptions options_;
    std::uint32_t msize_;
    std::unordered_map<std::uint32_t, Fid> fids_;
    std::uint32_t attaches_ = 0;  // granted so far, for max_attaches
    std::size_t xattr_bytes_ = 0;
    std::vector<std::uint8_t> xattr_buffer_;  // one read's worth, reused; fids keep exact copies
    bool root_is_host_root_ = false;          // the export is the host's "/"
    vmm::RateLimiter log_;
};

// A name the guest may create or look up in a directory: 1..255 bytes, no '/' or NUL, not "." or
// "..". Exposed for the tests.
bool valid_name(std::string_view name);

}  // namespace devices::p9
