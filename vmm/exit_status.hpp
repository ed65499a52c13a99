// lkvm's exit statuses, in one place: what `lkvm run` and the control commands return (main.cpp,
// control/commands.cpp), what `lkvm sandbox` returns instead (sandbox/), and how --help states them
// (cli.cpp). The sandbox's follow docker run and POSIX shells: 0-255 is CMD's own status, so lkvm's
// own outcomes take the values shells reserve (125-127, 128+N).
#pragma once

namespace vmm {

inline constexpr int kExitOk = 0;       // the guest powered off (or rebooted with --no-reboot), `lkvm stop`, Ctrl-A x
inline constexpr int kExitFailure = 1;  // setup or VMM failure
inline constexpr int kExitUsage = 2;    // usage error
inline constexpr int kExitGuestCrash = 3;    // the guest crashed
inline constexpr int kExitSignalBase = 128;  // + N: stopped by signal N (after an orderly teardown); CMD killed by it

// `lkvm sandbox` (0-124 can only be CMD's own status).
inline constexpr int kExitSandboxFailed =
    125;  // lkvm or the guest failed (usage and setup errors too); CMD's status is unknown
inline constexpr int kExitNotExecutable = 126;  // CMD was found but could not be executed
inline constexpr int kExitNotFound = 127;       // no CMD on the guest's PATH

// The --help paragraphs that state them.
inline constexpr const char* kRunExitHelp =
    "Exit status: 0 guest powered off (or rebooted with --no-reboot, `lkvm stop`, Ctrl-A x),\n"
    "1 setup failure, 2 usage error, 3 guest crash, 128+N stopped by signal N.";
inline constexpr const char* kSandboxExitHelp =
    "Exit status: CMD's own (0-255); 128+N when CMD was killed by signal N; 127 CMD not\n"
    "found, 126 not executable (as shells); 125 the sandbox failed: a usage error, a setup\n"
    "failure, or a guest that reset, crashed or ended without reporting CMD's status. When\n"
    "lkvm itself is stopped by signal N (Ctrl-C, SIGTERM): 128+N, whatever the guest reported.";

}  // namespace vmm
