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
// Host I/O is synchronous on the caller's thread (the virtio notify path: the vCPU or event-loop
// thread), a deliberate first version: a slow host file system stalls the guest's 9p requests.
#pragma once

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
    bool read_only = false;            // every request that would change the export gets EROFS
    // With read_only: the one file (a name in the export's root) the guest may still open for
    // writing and write, its first `writable_limit` bytes only, never resize, remove or replace
    // (lkvm sandbox's status file, vmm/sandbox/session.hpp).
    std::string writable_file;
    std::uint64_t writable_limit = 0;
    // Tattach requests granted for the server's life (Tversion and device resets do not restore
    // them); 0: no limit. lkvm sandbox's init attaches once, so that nothing else can.
    std::uint32_t max_attaches = 0;
    std::uint32_t max_fids = 4096;     // per guest; each fid holds at most two host descriptors
    std::uint32_t max_msize = 512 * 1024 + 4096;  // largest message negotiated by Tversion
};

class Server final : public virtio::P9Handler {
public:
    // `root`: an O_PATH (or O_RDONLY) descriptor of the export directory.
    Server(vmm::UniqueFd root, ServerOptions options);
    // Opens `dir` as the export; throws vmm::SetupError naming it when it cannot be used.
    static std::unique_ptr<Server> open(const std::string& dir, ServerOptions options);

    // Handles one complete request and builds its reply (at most `reply_limit` bytes) in `reply`.
    // With room for an Rlerror (11 bytes) a reply is always produced; with less the request is
    // not executed and `reply` stays empty.
    void handle(std::span<const std::uint8_t> request, std::vector<std::uint8_t>& reply, std::uint32_t reply_limit) override;

    // Device reset: every fid is clunked, msize returns to the default.
    void reset() override;

    std::uint32_t msize() const override { return msize_; }
    std::size_t fid_count() const { return fids_.size(); }
    const ServerOptions& options() const { return options_; }

private:
    struct Fid {
        vmm::UniqueFd path;        // O_PATH|O_NOFOLLOW descriptor of the file
        std::string rel;           // path below the export ("" = root), kept for `..` and reopening
        Qid qid;
        std::uint32_t uid = 0;     // n_uname of the attach (owner of what the fid creates as root)
        vmm::UniqueFd open;        // after Tlopen / Tlcreate
        int open_flags = -1;       // host O_* flags of `open`
        bool xattr = false;        // an xattr fid from Txattrwalk: reads come from `xattr_value`
        std::vector<std::uint8_t> xattr_value;
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
    // Inserts a new fid; EBADF-style errors: EEXIST when in use, EMFILE at the limit.
    int check_new_fid(std::uint32_t fid) const;
    // Opens `rel` (a path below the root, "" = the root) beneath the root: O_PATH by default.
    int open_rel(const std::string& rel, int flags, vmm::UniqueFd& out) const;
    // The fid's own inode opened with `flags`, never by its name again (which may now lead to a
    // FIFO or another file); only regular files and directories (EOPNOTSUPP, ELOOP otherwise).
    int reopen(const Fid& fid, int flags, vmm::UniqueFd& out) const;
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
    vmm::RateLimiter log_;
};

// A name the guest may create or look up in a directory: 1..255 bytes, no '/' or NUL, not "." or
// "..". Exposed for the tests.
bool valid_name(std::string_view name);

}  // namespace devices::p9
