// The client side of the control channel (`lkvm list/stop/stat/debug`): connect to a VM's socket
// by name, send one request, read the response with a deadline. Failures are values with one-line
// messages, sorted by kind so the CLI and `lkvm list` can act on them.
#pragma once

#include <chrono>
#include <string>
#include <variant>

#include "vmm/base/unique_fd.hpp"
#include "vmm/control/line_protocol.hpp"

namespace vmm {

struct ControlFailure {
    enum class Kind {
        NoVm,        // no socket of that name
        Stale,       // a socket file nobody listens on (the VM died without cleaning up)
        Permission,  // the socket or directory is not ours, or the server is another user
        Timeout,     // connected but no complete answer in time
        Protocol,    // the answer was malformed or cut short
        System,      // anything else (the message says what)
    };
    Kind kind;
    std::string message;
};

using ControlResult = std::variant<ControlResponse, ControlFailure>;

// Connects to `path` (non-blocking connect, retried while the listen backlog is full, until
// `deadline`). On success the server was checked to run as our uid (or root).
std::variant<UniqueFd, ControlFailure> connect_control_socket(const std::string& path, const std::string& name,
                                                              std::chrono::steady_clock::time_point deadline);

// One request/response exchange with the VM NAME whose socket is in `dir`.
ControlResult control_exchange(const std::string& dir, const std::string& name, const ControlRequest& request,
                               std::chrono::milliseconds timeout);

// Liveness of DIR/NAME.sock, for claiming a name and for `lkvm list`: Live (something accepts
// connections), Stale (socket file, nobody listening), Missing.
enum class SocketLiveness { Live, Stale, Missing };
SocketLiveness probe_control_socket(const std::string& path);

}  // namespace vmm
