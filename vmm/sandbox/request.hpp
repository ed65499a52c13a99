// `lkvm sandbox [run flags] [--workdir DIR] -- CMD [ARGS...]` as parsed by vmm/cli.cpp, before
// vmm/sandbox/session.hpp turns it into a machine.
#pragma once

#include <string>
#include <vector>

#include "vmm/config.hpp"

namespace vmm::sandbox {

struct Request {
    // The run flags. `params` here is what -p adds to the sandbox's own kernel command line;
    // initrd is the user's (lkvm's init is appended to it); console, shares and no_reboot are
    // completed by the session.
    VmConfig config;
    std::string workdir = ".";      // --workdir: shared read-write, CMD's working directory
    std::vector<std::string> argv;  // CMD and its arguments, as given after `--`
};

}  // namespace vmm::sandbox
