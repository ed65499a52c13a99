// Where the control sockets live and who may use them. One socket per running VM,
// DIR/NAME.sock, in a per-user directory:
//   $XDG_RUNTIME_DIR/lkvm   when XDG_RUNTIME_DIR is set (an absolute path), else
//   $HOME/.lkvm             (no passwd lookup: lkvm is linked statically).
// The directory is created 0700 and used only if it is a real directory (not a symlink) owned by
// our effective uid and not writable by group or others: anyone who could write there could
// swap a socket for their own and read what `lkvm debug` sends. The sockets themselves are 0600,
// and the server checks each peer's uid as well (SO_PEERCRED).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/unique_fd.hpp"

namespace vmm {

// [A-Za-z0-9._-]{1,64}, not "." or "..".
bool valid_vm_name(std::string_view name);
// One line saying what a valid name is, for errors.
std::string vm_name_rule();

// The directory for this user, from the environment (see above). Throws SetupError when there is
// no usable home either.
std::string control_dir_from_env();

// Checks `dir` (see above); with `create`, makes it (mode 0700) when missing, its parent must
// exist. Throws SetupError naming the directory and the fix. Without `create`, a missing
// directory returns false (nothing runs); an unsafe one throws.
bool check_control_dir(const std::string& dir, bool create);

// DIR/NAME.sock. Throws SetupError when the path does not fit sockaddr_un.
std::string control_socket_path(const std::string& dir, const std::string& name);

// The names of DIR's sockets (NAME for each NAME.sock with a valid name), sorted.
std::vector<std::string> control_socket_names(const std::string& dir);

// An exclusive flock on the directory, held while sockets are claimed or stale ones removed, so
// that two lkvm processes never both decide that a name is free (or that a socket is stale and
// remove the one that just replaced it). Blocks until the lock is free.
class ControlDirLock {
public:
    explicit ControlDirLock(const std::string& dir);
    ControlDirLock(const ControlDirLock&) = delete;
    ControlDirLock& operator=(const ControlDirLock&) = delete;

private:
    UniqueFd fd_;  // closing it drops the lock
};

}  // namespace vmm
