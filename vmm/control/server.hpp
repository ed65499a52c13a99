// The VM side of the control channel: ControlSocket claims NAME's socket file for as long as the
// lkvm process runs (across guest reboots), ControlServer serves it from the event loop while a
// Machine runs. No thread of its own: accepting, reading and answering are event-loop handlers,
// and every handler does bounded work (one bounded read, one request, one bounded write).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "vmm/base/event_loop.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/control/target.hpp"

namespace vmm {

// RAII owner of DIR/NAME.sock: a listening, non-blocking unix stream socket, mode 0600. The
// constructor refuses a name a live VM holds (SetupError: "a VM named X is already running"),
// replaces the socket of a dead one, and checks the directory (see control_dir.hpp; created if
// missing). The destructor unlinks the file (only if it is still ours) and closes the socket.
class ControlSocket {
public:
    ControlSocket(std::string dir, std::string name);
    ~ControlSocket();
    ControlSocket(const ControlSocket&) = delete;
    ControlSocket& operator=(const ControlSocket&) = delete;

    int fd() const { return fd_.get(); }
    const std::string& name() const { return name_; }
    const std::string& path() const { return path_; }

private:
    std::string dir_;
    std::string name_;
    std::string path_;
    UniqueFd fd_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

struct ControlServerOptions {
    // Connections at once; a new one beyond this closes the oldest (so idle connections cannot
    // lock `lkvm stop` out).
    std::size_t max_clients = 8;
    uid_t allowed_uid = ::geteuid();  // peers of any other uid are closed at once (SO_PEERCRED)
    // How long the listening socket is left alone after accept() failed (for want of descriptors
    // or memory: EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection waits in the backlog meanwhile,
    // and the loop serves the VM instead of spinning on a socket it cannot accept from.
    std::chrono::milliseconds accept_backoff{250};
};

// Serves `socket` on `loop` with `target`. Construct after the VM is built and destroy before the
// loop and the target (declare it after both).
class ControlServer {
public:
    ControlServer(EventLoop& loop, const ControlSocket& socket, ControlTarget& target,
                  ControlServerOptions options = {});
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    std::size_t client_count() const { return clients_.size(); }
    std::uint64_t refused_peers() const { return refused_; }
    std::uint64_t accept_failures() const { return accept_failures_; }

private:
    struct Client {
        UniqueFd fd;
        std::string input;
        std::uint64_t serial = 0;
    };

    void accept_clients();
    void read_client(int fd);
    void answer(Client& client, std::string_view line);
    void send_response(Client& client, const ControlResponse& response);
    void drop(int fd);

    EventLoop& loop_;
    const ControlSocket& socket_;
    ControlTarget& target_;
    const ControlServerOptions options_;
    std::map<int, Client> clients_;
    std::uint64_t next_serial_ = 0;
    std::uint64_t refused_ = 0;
    std::uint64_t accept_failures_ = 0;
    RateLimiter log_;
};

}  // namespace vmm
