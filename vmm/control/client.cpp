#include "vmm/control/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "vmm/base/error.hpp"
#include "vmm/control/dir.hpp"

namespace vmm {
namespace {

using Clock = std::chrono::steady_clock;

ControlFailure failure(ControlFailure::Kind kind, std::string message) { return {kind, std::move(message)}; }

int remaining_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 60'000));
}

// Waits for `events` on `fd` until the deadline: true when ready.
bool wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n > 0) return true;
        if (n == 0) return false;
        if (errno != EINTR) return false;
    }
}

sockaddr_un address_of(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.c_str(), std::min(path.size(), sizeof address.sun_path - 1));
    return address;
}

std::string no_vm(const std::string& name) { return "no VM named '" + name + "'; `lkvm list` shows the running ones"; }

}  // namespace

std::variant<UniqueFd, ControlFailure> connect_control_socket(const std::string& path, const std::string& name,
                                                              Clock::time_point deadline) {
    if (path.size() >= sizeof(sockaddr_un{}.sun_path))
        return failure(ControlFailure::Kind::System, "control socket path '" + path + "' is too long");
    const sockaddr_un address = address_of(path);
    for (;;) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd) return failure(ControlFailure::Kind::System, std::string("socket: ") + std::strerror(errno));
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
            ucred peer{};
            socklen_t length = sizeof peer;
            if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0)
                return failure(ControlFailure::Kind::System, std::string("SO_PEERCRED: ") + std::strerror(errno));
            // Our directory is owner-only, so only we (or root) can have bound this; check anyway.
            if (peer.uid != ::geteuid() && peer.uid != 0)
                return failure(ControlFailure::Kind::Permission, "the control socket '" + path + "' is served by uid " +
                                                                     std::to_string(peer.uid) +
                                                                     ", not by you; refusing to talk to it");
            return fd;
        }
        const int err = errno;
        switch (err) {
            case ENOENT: return failure(ControlFailure::Kind::NoVm, no_vm(name));
            case ECONNREFUSED:
                return failure(ControlFailure::Kind::Stale, "VM '" + name + "' is not running (stale socket '" + path +
                                                                "'; `lkvm list` removes it)");
            case EACCES:
            case EPERM:
                return failure(ControlFailure::Kind::Permission,
                               "permission denied on control socket '" + path + "' (it belongs to another user?)");
            case EAGAIN:  // a unix socket's backlog is full: the VM is busy, retry until the deadline
                if (remaining_ms(deadline) == 0)
                    return failure(ControlFailure::Kind::Timeout, "VM '" + name + "' is not accepting connections");
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                continue;
            case EINTR: continue;
            default:
                return failure(ControlFailure::Kind::System, "cannot connect to '" + path + "': " + std::strerror(err));
        }
    }
}

ControlResult control_exchange(const std::string& dir, const std::string& name, const ControlRequest& request,
                               std::chrono::milliseconds timeout) {
    const Clock::time_point deadline = Clock::now() + timeout;
    std::string path;
    try {
        path = control_socket_path(dir, name);
    } catch (const SetupError& e) {
        return failure(ControlFailure::Kind::System, e.what());
    }
    auto connected = connect_control_socket(path, name, deadline);
    if (auto* f = std::get_if<ControlFailure>(&connected)) return *f;
    UniqueFd fd = std::move(std::get<UniqueFd>(connected));

    const std::string wire = encode_control_request(request);
    for (std::size_t sent = 0; sent < wire.size();) {
        const ssize_t n = ::send(fd.get(), wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd.get(), POLLOUT, deadline))
                return failure(ControlFailure::Kind::Timeout, "VM '" + name + "' does not read its control socket");
        } else {
            return failure(ControlFailure::Kind::Protocol,
                           "VM '" + name + "' closed the connection (it may be shutting down)");
        }
    }

    ControlResponseDecoder decoder;
    char buffer[4096];
    while (!decoder.done()) {
        const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        if (n > 0) {
            decoder.feed(std::string_view(buffer, static_cast<std::size_t>(n)));
            if (!decoder.error().empty())
                return failure(ControlFailure::Kind::Protocol, "VM '" + name + "': " + decoder.error());
        } else if (n == 0) {
            return failure(ControlFailure::Kind::Protocol,
                           "VM '" + name + "' closed the connection before answering (it may be shutting down)");
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_for(fd.get(), POLLIN, deadline))
                return failure(ControlFailure::Kind::Timeout,
                               "VM '" + name + "' did not answer within " + std::to_string(timeout.count()) + " ms");
        } else {
            return failure(ControlFailure::Kind::Protocol, "VM '" + name + "': " + std::strerror(errno));
        }
    }
    return decoder.response();
}

SocketLiveness probe_control_socket(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return SocketLiveness::Missing;
    if (path.size() >= sizeof(sockaddr_un{}.sun_path)) return SocketLiveness::Missing;
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return SocketLiveness::Live;  // cannot tell: never remove what might be alive
    const sockaddr_un address = address_of(path);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0)
        return SocketLiveness::Live;
    if (errno == ECONNREFUSED) return SocketLiveness::Stale;
    if (errno == ENOENT) return SocketLiveness::Missing;
    return SocketLiveness::Live;  // EAGAIN (backlog full) and anything unclear: treat as alive
}

}  // namespace vmm
