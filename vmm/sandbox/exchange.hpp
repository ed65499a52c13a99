// What lkvm sandbox and its guest init (vmm/sandbox/guest_init.hpp) exchange through the private
// control share (the exit statuses of `lkvm sandbox` are in vmm/exit_status.hpp). Both sides are this file's code, but
// the host reads what a guest wrote: everything is parsed strictly and bounded.
//
//   command   (host -> guest) WORKDIR NUL ARG0 NUL ARG1 NUL ...: no quoting, any byte but NUL
//   status    (guest -> host) CMD's status in decimal, 0-255, and a newline
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/exit_status.hpp"

namespace vmm::sandbox {

// Tags of the three shares every sandbox has (user --9p shares must use other tags).
inline constexpr std::string_view kRootTag = "lkvm-root";    // the host's /, read-only
inline constexpr std::string_view kWorkTag = "lkvm-work";    // --workdir, read-write
inline constexpr std::string_view kControlTag = "lkvm-ctl";  // the private control directory
inline constexpr std::string_view kCommandFile = "command";
inline constexpr std::string_view kStatusFile = "status";
// The name of the init inside the guest, and how main() recognizes it runs there.
inline constexpr std::string_view kInitPath = "/lkvm-init";

// Linux takes at most 32 pages of argument strings per exec argument (MAX_ARG_STRLEN,
// include/uapi/linux/binfmts.h) and a quarter of the stack in all; one MiB in all is plenty.
inline constexpr std::size_t kMaxCommandBytes = 1 << 20;
inline constexpr std::size_t kMaxStatusBytes = 16;

struct GuestCommand {
    std::string workdir;            // absolute path in the host's (and the guest's) tree
    std::vector<std::string> argv;  // argv[0] is looked up on PATH
};

// Empty on success, else why `command` cannot be handed over (one line).
std::string check_command(const GuestCommand& command);
std::string encode_command(const GuestCommand& command);
std::optional<GuestCommand> decode_command(std::string_view bytes);

std::string encode_status(int status);
// A status the guest wrote: digits only (one newline allowed at the end), 0-255.
std::optional<int> decode_status(std::string_view bytes);

// The status a shell would report for a child: `wait_status` as filled by waitpid().
int status_of_wait(int wait_status);
// The status of an exec that failed with `error` (errno): 127 not found, 126 otherwise.
int status_of_exec_error(int error);

}  // namespace vmm::sandbox
