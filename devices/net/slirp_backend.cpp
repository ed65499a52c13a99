#include "devices/net/slirp_backend.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <slirp/libslirp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include "vmm/base/error.hpp"

namespace devices::net {

struct SlirpBackend::Timer {
    void (*callback)(void*);
    void* opaque;
    std::int64_t expire_ms = -1;  // -1: not armed
};

namespace {

SlirpBackend& self(void* opaque) { return *static_cast<SlirpBackend*>(opaque); }

std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

in_addr to_addr(std::uint32_t host_order) {
    in_addr a{};
    a.s_addr = htonl(host_order);
    return a;
}

// The C callbacks; everything runs with the backend's lock held (slirp is called only under it).
ssize_t cb_send_packet(const void* buf, size_t len, void* opaque) {
    self(opaque).emit(buf, len);
    return static_cast<ssize_t>(len);
}
void cb_guest_error(const char* msg, void* opaque) { self(opaque).guest_error(msg); }
int64_t cb_clock_get_ns(void*) { return now_ns(); }
void* cb_timer_new(SlirpTimerCb cb, void* cb_opaque, void* opaque) { return self(opaque).timer_new(cb, cb_opaque); }
void cb_timer_free(void* timer, void* opaque) { self(opaque).timer_free(static_cast<SlirpBackend::Timer*>(timer)); }
void cb_timer_mod(void* timer, int64_t expire_ms, void* opaque) {
    self(opaque).timer_mod(static_cast<SlirpBackend::Timer*>(timer), expire_ms);
}
// The fd set is re-read after every slirp call (sync()), so these need not track anything.
void cb_register_poll_fd(int, void*) {}
void cb_unregister_poll_fd(int, void*) {}
void cb_notify(void*) {}
int cb_add_poll(int fd, int events, void* opaque) { return self(opaque).add_poll(fd, events); }
int cb_get_revents(int idx, void* opaque) { return self(opaque).revents(idx); }

const SlirpCb kCallbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_unregister_poll_fd,
    .notify = cb_notify,
    .init_completed = nullptr,
    .timer_new_opaque = nullptr,
};

std::size_t default_max_sockets() {
    constexpr std::size_t kMax = 1024;
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return kMax;
    return std::clamp<std::size_t>(static_cast<std::size_t>(limit.rlim_cur / 4), 16, kMax);
}

// Whether the process could open one more descriptor now (what an accept() needs).
bool descriptor_free(int any_fd) {
    const int probe = ::fcntl(any_fd, F_DUPFD_CLOEXEC, 0);
    if (probe < 0) return false;
    ::close(probe);
    return true;
}

std::string hostfwd_text(const SlirpOptions::Forward& fwd) {
    return std::string(fwd.udp ? "udp:" : "tcp:") + vmm::format_ipv4(fwd.host_addr) + ":" +
           std::to_string(fwd.host_port) + "-" + std::to_string(fwd.guest_port);
}

vmm::UniqueFd checked(int fd, const char* what) {
    if (fd < 0) throw vmm::SetupError(std::string("-n/--network mode=user: ") + what + ": " + std::strerror(errno));
    return vmm::UniqueFd(fd);
}

}  // namespace

SlirpBackend::SlirpBackend(const SlirpOptions& options, SlirpLimits limits)
    : options_(options),
      epoll_(checked(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1")),
      timer_fd_(checked(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), "timerfd_create")),
      queued_event_(checked(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd")),
      max_sockets_(limits.max_sockets != 0 ? limits.max_sockets : default_max_sockets()),
      listener_backoff_(limits.listener_backoff) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = timer_fd_.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, timer_fd_.get(), &ev) != 0)
        throw vmm::SetupError(std::string("-n/--network mode=user: epoll_ctl: ") + std::strerror(errno));

    const std::uint32_t network = options.host_ip & 0xffffff00;
    SlirpConfig cfg{};
    cfg.version = 1;
    // restrict=on (QEMU's): slirp forwards no guest traffic out, only its own DHCP answers and
    // the hostfwd connections in. host_loopback=off: the gateway address no longer stands for the
    // host's 127.0.0.1 (slirp refuses the connection instead).
    cfg.restricted = options.restricted ? 1 : 0;
    cfg.disable_host_loopback = !options.host_loopback;
    cfg.in_enabled = true;
    cfg.vnetwork = to_addr(network);
    cfg.vnetmask = to_addr(0xffffff00);
    cfg.vhost = to_addr(options.host_ip);
    cfg.in6_enabled = false;
    cfg.vhostname = "lkvm";
    cfg.vdhcp_start = to_addr(options.guest_ip);
    cfg.vnameserver = to_addr(network | 3);
    std::lock_guard guard(lock_);
    slirp_ = slirp_new(&cfg, &kCallbacks, this);
    if (!slirp_) throw vmm::SetupError("-n/--network mode=user: libslirp could not start (slirp_new failed)");
    for (const SlirpOptions::Forward& fwd : options.hostfwd) {
        const std::uint32_t guest = fwd.guest_addr != 0 ? fwd.guest_addr : options.guest_ip;
        if (slirp_add_hostfwd(slirp_, fwd.udp ? 1 : 0, to_addr(fwd.host_addr), fwd.host_port, to_addr(guest),
                              fwd.guest_port) < 0) {
            const int err = errno;
            slirp_cleanup(slirp_);
            slirp_ = nullptr;
            throw vmm::SetupError("-n/--network hostfwd=" + hostfwd_text(fwd) + ": cannot listen on " +
                                  vmm::format_ipv4(fwd.host_addr) + " port " + std::to_string(fwd.host_port) + " (" +
                                  std::strerror(err) + "); pick a free port or another address");
        }
    }
    sync();
    // Every socket slirp polls now is a hostfwd listener; the TCP ones accept connections.
    for (const auto& [fd, inode] : sockets_) {
        int listening = 0;
        socklen_t length = sizeof listening;
        if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 && listening) listeners_[fd] = {};
    }
}

SlirpBackend::~SlirpBackend() {
    std::lock_guard guard(lock_);
    if (slirp_) slirp_cleanup(slirp_);
}

std::string SlirpBackend::describe() const {
    std::lock_guard guard(lock_);
    return "user guest=" + vmm::format_ipv4(options_.guest_ip) + "/24 gateway=" + vmm::format_ipv4(options_.host_ip) +
           " hostfwd=" + std::to_string(options_.hostfwd.size()) + " queued=" + std::to_string(queued_.size()) +
           " dropped=" + std::to_string(dropped_) + " sockets=" + std::to_string(sockets_.size()) + "/" +
           std::to_string(max_sockets_) + " refused=" + std::to_string(refused_flows_);
}

std::size_t SlirpBackend::sockets() const {
    std::lock_guard guard(lock_);
    return sockets_.size();
}

std::uint64_t SlirpBackend::refused_flows() const {
    std::lock_guard guard(lock_);
    return refused_flows_;
}

std::uint64_t SlirpBackend::listener_pauses() const {
    std::lock_guard guard(lock_);
    return listener_pauses_;
}

bool SlirpBackend::may_open_socket(std::span<const std::uint8_t> frame) const {
    // Ethernet + IPv4 (slirp runs without IPv6 here: in6_enabled is off). ARP and the rest open
    // nothing; a frame too short to tell is left to slirp, which drops it.
    constexpr std::size_t kEth = 14;
    if (frame.size() < kEth + 20 || frame[12] != 0x08 || frame[13] != 0x00) return false;
    const std::uint8_t* ip = frame.data() + kEth;
    const std::size_t header = std::size_t{ip[0] & 0x0fu} * 4;
    if (header < 20 || frame.size() < kEth + header) return false;
    const std::uint8_t protocol = ip[9];
    const std::uint32_t destination =
        (std::uint32_t{ip[16]} << 24) | (std::uint32_t{ip[17]} << 16) | (std::uint32_t{ip[18]} << 8) | ip[19];
    // A fragment: slirp reassembles and then handles the datagram; count it as a new flow.
    const bool fragment = ((ip[6] & 0x3f) | ip[7]) != 0;
    if (fragment) return protocol == 17 || protocol == 6 || protocol == 1;
    const std::uint8_t* l4 = ip + header;
    const std::size_t l4_length = frame.size() - kEth - header;
    switch (protocol) {
        case 17: {  // UDP: one socket per guest source port, except the DHCP server inside slirp
            if (l4_length < 8) return false;
            const std::uint16_t port = static_cast<std::uint16_t>((l4[2] << 8) | l4[3]);
            return !(port == 67 && (destination == options_.host_ip || destination == 0xffffffff));
        }
        case 6:  // TCP: a SYN without ACK starts a connection
            return l4_length >= 14 && (l4[13] & 0x12) == 0x02;
        case 1:  // ICMP: an echo request to anything but slirp's own gateway and DNS addresses
            return l4_length >= 1 && l4[0] == 8 && destination != options_.host_ip &&
                   destination != ((options_.host_ip & 0xffffff00) | 3);
        default: return false;
    }
}

std::size_t SlirpBackend::sockets_after_purge() {
    // At most once between two syncs: nothing slirp closed can show up in between.
    if (!purged_since_sync_) {
        purged_since_sync_ = true;
        for (auto it = sockets_.begin(); it != sockets_.end();) {
            struct stat st {};
            const bool polled = registered_.count(it->first) != 0 || listeners_.count(it->first) != 0;
            if (polled || (::fstat(it->first, &st) == 0 && st.st_ino == it->second)) ++it;
            else it = sockets_.erase(it);  // closed (or the number now holds another file)
        }
    }
    return sockets_.size() + admitted_since_sync_;
}

bool SlirpBackend::send(std::span<const std::uint8_t> frame) {
    if (frame.size() > INT_MAX) return false;
    std::lock_guard guard(lock_);
    if (may_open_socket(frame)) {
        if (sockets_.size() + admitted_since_sync_ >= max_sockets_ && sockets_after_purge() >= max_sockets_) {
            ++refused_flows_;
            vmm::guest_error(log_,
                             "-n mode=user: %zu host sockets in use, the most allowed; dropping a frame "
                             "that would open another",
                             sockets_.size());
            return false;
        }
        ++admitted_since_sync_;
    }
    slirp_input(slirp_, frame.data(), static_cast<int>(frame.size()));
    sync_due_ = true;  // a new flow may have opened a socket: flush() syncs once per batch
    return true;
}

void SlirpBackend::flush() {
    std::lock_guard guard(lock_);
    if (sync_due_) sync();
}

std::size_t SlirpBackend::receive(std::span<std::uint8_t> buffer) {
    std::lock_guard guard(lock_);
    // Bounded: frames too big for `buffer` are dropped one by one, at most the queue's length.
    while (!queued_.empty()) {
        std::vector<std::uint8_t> frame = std::move(queued_.front());
        queued_.pop_front();
        if (queued_.empty()) {
            std::uint64_t count;
            [[maybe_unused]] ssize_t n = ::read(queued_event_.get(), &count, sizeof count);
        }
        if (frame.size() > buffer.size()) {
            ++dropped_;
            continue;
        }
        std::copy(frame.begin(), frame.end(), buffer.begin());
        return frame.size();
    }
    return 0;
}

void SlirpBackend::service() {
    std::lock_guard guard(lock_);
    std::uint64_t expirations;
    if (::read(timer_fd_.get(), &expirations, sizeof expirations) == sizeof expirations) timer_deadline_ms_ = -1;
    // One round of slirp's own poll protocol, without blocking: fill, poll(0), dispatch.
    pollfds_.clear();
    std::uint32_t timeout = UINT32_MAX;
    slirp_pollfds_fill(slirp_, &timeout, cb_add_poll, this);
    int ready = pollfds_.empty() ? 0 : ::poll(pollfds_.data(), pollfds_.size(), 0);
    if (ready > 0) hold_back_listeners();
    slirp_pollfds_poll(slirp_, ready < 0 ? 1 : 0, cb_get_revents, this);
    run_timers();
    sync();
}

std::uint64_t SlirpBackend::dropped() const {
    std::lock_guard guard(lock_);
    return dropped_;
}

void SlirpBackend::emit(const void* frame, std::size_t length) {
    if (queued_.size() >= kMaxQueuedFrames) {
        ++dropped_;
        vmm::guest_error(log_, "-n mode=user: guest not taking frames, dropping (%zu queued)", queued_.size());
        return;
    }
    const auto* bytes = static_cast<const std::uint8_t*>(frame);
    queued_.emplace_back(bytes, bytes + length);
    if (queued_.size() == 1) {
        const std::uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(queued_event_.get(), &one, sizeof one);
    }
}

SlirpBackend::Timer* SlirpBackend::timer_new(void (*callback)(void*), void* opaque) {
    timers_.push_back(std::make_unique<Timer>(Timer{callback, opaque}));
    return timers_.back().get();
}

void SlirpBackend::timer_free(Timer* timer) {
    std::erase_if(timers_, [&](const std::unique_ptr<Timer>& t) { return t.get() == timer; });
}

void SlirpBackend::timer_mod(Timer* timer, std::int64_t expire_ms) { timer->expire_ms = expire_ms; }

void SlirpBackend::guest_error(const char* message) { vmm::guest_error(log_, "-n mode=user: libslirp: %s", message); }

bool SlirpBackend::listener_paused(int fd, std::int64_t now_ms) const {
    const auto it = listeners_.find(fd);
    return it != listeners_.end() && it->second.paused_until_ms > now_ms;
}

void SlirpBackend::hold_back_listeners() {
    // slirp accepts from a readable listener and, when accept() fails (EMFILE), only closes the
    // socket it prepared: the listener stays readable and every round would try again at once.
    const std::int64_t now_ms = now_ns() / 1'000'000;
    for (pollfd& p : pollfds_) {
        const auto it = listeners_.find(p.fd);
        if (it == listeners_.end()) continue;
        Listener& listener = it->second;
        if (!(p.revents & POLLIN)) {
            listener.readable_rounds = 0;
            continue;
        }
        const bool at_cap = sockets_after_purge() >= max_sockets_;
        const bool no_descriptor = !descriptor_free(epoll_.get());
        if (!at_cap && !no_descriptor && ++listener.readable_rounds <= kListenerRounds) continue;
        p.revents = 0;  // slirp does not try this round
        listener.readable_rounds = 0;
        listener.paused_until_ms = now_ms + listener_backoff_.count();
        ++listener_pauses_;
        vmm::guest_error(log_, "-n mode=user: hostfwd listener cannot accept (%s); not accepting for %lld ms",
                         at_cap          ? "socket cap reached"
                         : no_descriptor ? "no file descriptor left"
                                         : "accept keeps failing",
                         static_cast<long long>(listener_backoff_.count()));
    }
}

int SlirpBackend::add_poll(int fd, int events) {
    pollfd p{};
    p.fd = fd;
    // A paused listener is not polled: its connections wait in the backlog.
    if (listener_paused(fd, now_ns() / 1'000'000)) events = 0;
    if (events & SLIRP_POLL_IN) p.events |= POLLIN;
    if (events & SLIRP_POLL_OUT) p.events |= POLLOUT;
    if (events & SLIRP_POLL_PRI) p.events |= POLLPRI;
    pollfds_.push_back(p);
    return static_cast<int>(pollfds_.size() - 1);
}

int SlirpBackend::revents(int index) const {
    if (index < 0 || static_cast<std::size_t>(index) >= pollfds_.size()) return 0;
    const short r = pollfds_[static_cast<std::size_t>(index)].revents;
    int events = 0;
    if (r & POLLIN) events |= SLIRP_POLL_IN;
    if (r & POLLOUT) events |= SLIRP_POLL_OUT;
    if (r & POLLPRI) events |= SLIRP_POLL_PRI;
    if (r & POLLERR) events |= SLIRP_POLL_ERR;
    if (r & POLLHUP) events |= SLIRP_POLL_HUP;
    return events;
}

void SlirpBackend::run_timers() {
    const std::int64_t now_ms = now_ns() / 1'000'000;
    // A callback may arm or free timers: collect the due ones first, then look each up again.
    std::vector<Timer*> due;
    for (const auto& t : timers_)
        if (t->expire_ms >= 0 && t->expire_ms <= now_ms) due.push_back(t.get());
    for (Timer* t : due) {
        const bool alive = std::any_of(timers_.begin(), timers_.end(), [&](const auto& p) { return p.get() == t; });
        if (!alive || t->expire_ms < 0 || t->expire_ms > now_ms) continue;
        t->expire_ms = -1;
        t->callback(t->opaque);
    }
}

void SlirpBackend::sync() {
    sync_due_ = false;
    pollfds_.clear();
    std::uint32_t timeout = UINT32_MAX;
    slirp_pollfds_fill(slirp_, &timeout, cb_add_poll, this);
    std::map<int, std::uint32_t> wanted;
    for (const pollfd& p : pollfds_) {
        // Counted for the cap: every socket slirp polls is one it holds (see the header).
        if (!sockets_.count(p.fd)) {
            struct stat st {};
            if (::fstat(p.fd, &st) == 0) sockets_[p.fd] = st.st_ino;
        }
        if (p.events == 0) continue;  // a paused listener
        std::uint32_t ev = 0;
        if (p.events & POLLIN) ev |= EPOLLIN;
        if (p.events & POLLOUT) ev |= EPOLLOUT;
        if (p.events & POLLPRI) ev |= EPOLLPRI;
        wanted[p.fd] |= ev;
    }
    for (auto it = registered_.begin(); it != registered_.end();) {
        if (!wanted.count(it->first)) {
            ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->first, nullptr);  // may be closed already
            it = registered_.erase(it);
        } else {
            ++it;
        }
    }
    for (const auto& [fd, ev] : wanted) {
        epoll_event e{};
        e.events = ev;
        e.data.fd = fd;
        // ADD first, also for a known fd: slirp may have closed it and got the same number for a
        // new socket, which the kernel took out of the set with the old one (then ADD succeeds).
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) == 0) {
            registered_[fd] = ev;
        } else if (errno == EEXIST && registered_[fd] != ev) {
            if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &e) == 0) registered_[fd] = ev;
        }
    }
    admitted_since_sync_ = 0;
    purged_since_sync_ = false;
    // The next deadline: slirp's poll timeout (its TCP timers), the earliest armed timer or the
    // end of a listener's pause.
    std::int64_t deadline_ms = timeout == UINT32_MAX ? -1 : now_ns() / 1'000'000 + timeout;
    for (const auto& t : timers_)
        if (t->expire_ms >= 0 && (deadline_ms < 0 || t->expire_ms < deadline_ms)) deadline_ms = t->expire_ms;
    const std::int64_t now_ms = now_ns() / 1'000'000;
    for (auto& [fd, listener] : listeners_) {
        if (listener.paused_until_ms >= 0 && listener.paused_until_ms <= now_ms) listener.paused_until_ms = -1;
        if (listener.paused_until_ms >= 0 && (deadline_ms < 0 || listener.paused_until_ms < deadline_ms))
            deadline_ms = listener.paused_until_ms;
    }
    // An armed timer that fires no later is kept (service() re-syncs when it fires early): a
    // syscall less on every pass of a busy flow.
    if (deadline_ms >= 0 && timer_deadline_ms_ >= 0 && timer_deadline_ms_ <= deadline_ms) return;
    itimerspec spec{};
    if (deadline_ms >= 0) {
        const std::int64_t in_ms = std::max<std::int64_t>(deadline_ms - now_ms, 1);
        spec.it_value.tv_sec = in_ms / 1000;
        spec.it_value.tv_nsec = (in_ms % 1000) * 1'000'000;
    }
    ::timerfd_settime(timer_fd_.get(), 0, &spec, nullptr);
    timer_deadline_ms_ = deadline_ms;
}

}  // namespace devices::net
