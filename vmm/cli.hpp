// The command line: `lkvm run ...` (kvmtool's flags), `lkvm sandbox ... -- CMD`, `lkvm version`,
// `lkvm --help`, `lkvm help [COMMAND]`, and the control commands `lkvm list|stop|stat|debug`
// (vmm/control/commands.hpp). The only file that includes CLI11. It fills a VmConfig and never prints: the caller
// prints an Exit's text.
#pragma once

#include <string>
#include <variant>

#include "vmm/config.hpp"
#include "vmm/control/commands.hpp"
#include "vmm/sandbox/request.hpp"

namespace vmm::cli {

inline constexpr const char* kVersion = "0.1.0";
// The commit lkvm was built from (`git describe --always --dirty`, which the Makefile passes to
// vmm/cli.cpp alone as LKVM_GIT_COMMIT), or "unknown".
const char* git_commit();

// "lkvm VERSION (git COMMIT)\n": `lkvm --version` and `lkvm version`.
std::string version_text();

// Print `out` to stdout and `err` to stderr, then exit with `code` (0: help/version; 2: usage;
// 125: usage of `lkvm sandbox`, whose statuses below 125 are CMD's).
struct Exit {
    int code = 0;
    std::string out;
    std::string err;
};

// `lkvm run`: build and boot this machine.
struct Run {
    VmConfig config;
};

// `lkvm list|stop|stat|debug`: a ControlCommand, run by vmm::run_control_command.
// `lkvm sandbox`: a sandbox::Request, run by vmm/sandbox/session.hpp.
using Command = std::variant<Exit, Run, ControlCommand, sandbox::Request>;

Command parse(int argc, const char* const* argv);

}  // namespace vmm::cli
