#include "vmm/control/server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/control/client.hpp"
#include "vmm/control/dir.hpp"

namespace vmm {
namespace {

constexpr int kBacklog = 8;
constexpr int kAcceptsPerWakeup = 16;
// Room for the largest response in the socket's buffer, so that answering never waits.
constexpr int kSendBuffer = static_cast<int>(2 * kControlMaxResponse);

}  // namespace

// ---- ControlSocket ---------------------------------------------------------------------------------

ControlSocket::ControlSocket(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {
    if (!valid_vm_name(name_)) throw SetupError("--name '" + name_ + "': " + vm_name_rule());
    check_control_dir(dir_, true);
    path_ = control_socket_path(dir_, name_);

    ControlDirLock lock(dir_);
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw SetupError("'" + path_ + "' exists and is not a socket; remove it or pick another name with --name");
        switch (probe_control_socket(path_)) {
            case SocketLiveness::Live:
                throw SetupError("a VM named '" + name_ + "' is already running (control socket '" + path_ +
                                 "'); pick another name with --name or stop it with `lkvm stop " + name_ + "`");
            case SocketLiveness::Stale:
                log_info("control: replacing the stale socket '%s' of a VM that is gone", path_.c_str());
                if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
                    throw_errno("cannot remove stale socket '" + path_ + "'");
                break;
            case SocketLiveness::Missing: break;
        }
    }

    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd_) throw_errno("control socket");
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path_.c_str(), path_.size());  // fits: control_socket_path checked
    if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
        throw_errno("cannot bind control socket '" + path_ + "'");
    // The directory already keeps others out; 0600 keeps the socket private if it is ever moved
    // or the directory loosened. (Not via umask: that is process-wide.)
    if (::chmod(path_.c_str(), 0600) != 0 || ::lstat(path_.c_str(), &st) != 0) {
        const int err = errno;
        ::unlink(path_.c_str());
        throw_errno("control socket '" + path_ + "'", err);
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    if (::listen(fd_.get(), kBacklog) != 0) {
        const int err = errno;
        ::unlink(path_.c_str());
        throw_errno("cannot listen on control socket '" + path_ + "'", err);
    }
    log_debug("control: listening on %s", path_.c_str());
}

ControlSocket::~ControlSocket() {
    // Remove the file only if it is still the one we bound: never another VM's socket.
    auto unlink_if_ours = [&] {
        struct stat st {};
        if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
    };
    try {
        ControlDirLock lock(dir_);
        unlink_if_ours();
    } catch (const std::exception&) {
        unlink_if_ours();  // the directory cannot be locked (removed?): still clean up
    }
}

// ---- ControlServer ---------------------------------------------------------------------------------

ControlServer::ControlServer(EventLoop& loop, const ControlSocket& socket, ControlTarget& target,
                             ControlServerOptions options)
    : loop_(loop), socket_(socket), target_(target), options_(options), log_(5) {
    loop_.add(socket_.fd(), "control socket", [this] { accept_clients(); });
}

ControlServer::~ControlServer() {
    loop_.remove(socket_.fd());
    for (auto& [fd, client] : clients_) loop_.remove(fd);
    clients_.clear();
}

void ControlServer::accept_clients() {
    for (int i = 0; i < kAcceptsPerWakeup; ++i) {
        UniqueFd fd(::accept4(socket_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) return;
            ++accept_failures_;
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in the backlog and the socket
            // stays readable, so without a pause the level-triggered loop would call us again at
            // once, for ever. Any other failure is paused too: none of them may spin the loop.
            loop_.pause(socket_.fd(), options_.accept_backoff);
            std::uint64_t dropped = 0;
            if (log_.allow(&dropped))
                log_warn("control: accept on %s: %s; not accepting for %lld ms (%llu similar messages suppressed)",
                         socket_.path().c_str(), std::strerror(err),
                         static_cast<long long>(options_.accept_backoff.count()),
                         static_cast<unsigned long long>(dropped));
            return;
        }
        ucred peer{};
        socklen_t length = sizeof peer;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.uid != options_.allowed_uid) {
            ++refused_;
            if (log_.allow())
                log_warn("control: refused a connection to %s from uid %u (pid %d): only uid %u may control this VM",
                         socket_.name().c_str(), static_cast<unsigned>(peer.uid), static_cast<int>(peer.pid),
                         static_cast<unsigned>(options_.allowed_uid));
            continue;  // closes it
        }
        if (clients_.size() >= options_.max_clients) {
            auto oldest = std::min_element(clients_.begin(), clients_.end(), [](const auto& a, const auto& b) {
                return a.second.serial < b.second.serial;
            });
            log_debug("control: %zu connections open; closing the oldest", clients_.size());
            drop(oldest->first);
        }
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &kSendBuffer, sizeof kSendBuffer);  // best effort
        const int raw = fd.get();
        loop_.add(raw, "control client", [this, raw] { read_client(raw); });
        clients_[raw] = Client{std::move(fd), {}, next_serial_++};
    }
}

void ControlServer::read_client(int fd) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    Client& client = it->second;
    // Never more than one request line plus its newline is buffered.
    char buffer[kControlMaxRequest + 1];
    const std::size_t room = kControlMaxRequest + 1 - client.input.size();
    const ssize_t n = ::recv(fd, buffer, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) drop(fd);
        return;
    }
    if (n == 0) {
        // The peer is done sending: a request without its newline still counts; an empty
        // connection (a liveness probe) just closes.
        if (client.input.empty()) drop(fd);
        else answer(client, client.input);
        return;
    }
    client.input.append(buffer, static_cast<std::size_t>(n));
    const std::size_t newline = client.input.find('\n');
    if (newline != std::string::npos) {
        answer(client, std::string_view(client.input).substr(0, newline));
    } else if (client.input.size() >= kControlMaxRequest) {
        send_response(client,
                      ControlResponse::failure("request longer than " + std::to_string(kControlMaxRequest) + " bytes"));
        drop(fd);
    }
}

void ControlServer::answer(Client& client, std::string_view line) {
    const int fd = client.fd.get();
    auto parsed = parse_control_request(line);
    if (auto* error = std::get_if<std::string>(&parsed)) {
        send_response(client, ControlResponse::failure(*error));
        drop(fd);
        return;
    }
    const ControlRequest& request = std::get<ControlRequest>(parsed);
    ControlResponse response;
    try {
        response = dispatch_control_request(target_, request, socket_.name());
    } catch (const std::exception& e) {
        // A bug in a target: answer it, keep the VM (the event loop's firewall would do the
        // latter, but the client deserves a reply).
        response = ControlResponse::failure(std::string("internal error: ") + e.what());
    }
    // The channel's own health belongs in `lkvm stat` too, and only the server knows it.
    if (request.command == "stat" && response.ok)
        response.body += "control clients=" + std::to_string(clients_.size()) +
                         " refused_peers=" + std::to_string(refused_) +
                         " accept_failures=" + std::to_string(accept_failures_) + "\n";
    send_response(client, response);
    drop(fd);
    if (request.command == "stop" && response.ok) {
        log_info("control: %s: stop requested", socket_.name().c_str());
        target_.stop();
    }
}

void ControlServer::send_response(Client& client, const ControlResponse& response) {
    const std::string wire = encode_control_response(response);
    for (std::size_t sent = 0; sent < wire.size();) {
        const ssize_t n = ::send(client.fd.get(), wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        // EAGAIN: the peer's buffer is full and we do not wait for it; anything else: it left.
        if (log_.allow()) log_debug("control: response to a client cut short after %zu bytes", sent);
        return;
    }
}

void ControlServer::drop(int fd) {
    loop_.remove(fd);
    clients_.erase(fd);
}

}  // namespace vmm
