// `lkvm list`, `lkvm stop NAME|--all`, `lkvm stat NAME`, `lkvm debug NAME dump|fault ...|fail-next ...`:
// the client commands, run against the VMs whose sockets are in a control directory. Returns the
// text to print and the exit status (0 done, 1 failed, 2 usage); errors are one line.
#pragma once

#include <string>
#include <vector>

namespace vmm {

struct ControlCommand {
    enum class Kind { List, Stop, Stat, Debug };
    Kind kind = Kind::List;
    std::string name;                // all but List (and Stop with `all`)
    std::vector<std::string> words;  // Debug: the debug command and its arguments
    bool all = false;                // Stop: every VM with a socket in the directory
    friend bool operator==(const ControlCommand&, const ControlCommand&) = default;
};

struct ControlOutput {
    int code = 0;
    std::string out;
    std::string err;
};

// How long a client waits for a VM's answer, and `lkvm stop` for the VM to be gone.
struct ControlTimeouts {
    int answer_ms = 5000;
    int list_ping_ms = 1000;
    int stop_wait_ms = 15000;
};

ControlOutput run_control_command(const ControlCommand& command, const std::string& dir, ControlTimeouts timeouts = {});

}  // namespace vmm
