#include "vmm/base/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include "vmm/base/error.hpp"

namespace vmm {

EventLoop::EventLoop()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      timer_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)),
      firewall_log_(5) {
    if (!epoll_) throw_errno("event loop: epoll_create1");
    if (!wake_) throw_errno("event loop: eventfd");
    if (!timer_) throw_errno("event loop: timerfd_create");
    for (int fd : {wake_.get(), timer_.get()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("event loop: epoll_ctl");
    }
}

bool EventLoop::insert(int fd, std::string name, Handler handler, bool tolerate_unpollable) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        if (tolerate_unpollable && errno == EPERM) return false;
        throw_errno("event loop: cannot watch " + name);
    }
    entries_[fd] = std::make_shared<const Entry>(Entry{std::move(name), std::move(handler)});
    return true;
}

void EventLoop::add(int fd, std::string name, Handler handler) {
    insert(fd, std::move(name), std::move(handler), false);
}

bool EventLoop::try_add(int fd, std::string name, Handler handler) {
    return insert(fd, std::move(name), std::move(handler), true);
}

void EventLoop::remove(int fd) {
    if (entries_.erase(fd) == 0) return;
    if (paused_.erase(fd) != 0) return;  // not in the epoll set meanwhile
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void EventLoop::pause(int fd, std::chrono::milliseconds duration) {
    if (entries_.count(fd) == 0) return;
    if (paused_.count(fd) == 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    paused_[fd] = Clock::now() + duration;
    resume_due();  // arms the timer
}

void EventLoop::resume_due() {
    const Clock::time_point now = Clock::now();
    std::optional<Clock::time_point> next;
    for (auto it = paused_.begin(); it != paused_.end();) {
        if (it->second > now) {
            if (!next || it->second < *next) next = it->second;
            ++it;
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = it->first;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, it->first, &ev) != 0 && firewall_log_.allow())
            log_error("event loop: cannot watch %s again: %s", entries_.at(it->first)->name.c_str(),
                      std::strerror(errno));
        it = paused_.erase(it);
    }
    itimerspec spec{};  // all zero: disarmed
    if (next) {
        // At least 1 ns: a zero it_value would disarm the timer instead.
        const auto in = std::max<Clock::duration>(*next - now, std::chrono::nanoseconds(1));
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(in).count();
        spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    ::timerfd_settime(timer_.get(), 0, &spec, nullptr);
}

void EventLoop::stop() {
    stopped_.store(true);
    std::uint64_t one = 1;
    // An eventfd write only fails when the counter would overflow: then it is already signalled.
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

bool EventLoop::stopped() const { return stopped_.load(); }

void EventLoop::run() {
    constexpr int kBatch = 16;
    epoll_event events[kBatch];
    while (!stopped_.load()) {
        int n = ::epoll_wait(epoll_.get(), events, kBatch, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("event loop: epoll_wait: %s", std::strerror(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == wake_.get()) return;
            if (fd == timer_.get()) {
                std::uint64_t expirations;
                [[maybe_unused]] ssize_t r = ::read(timer_.get(), &expirations, sizeof expirations);
                resume_due();
                continue;
            }
            auto it = entries_.find(fd);
            if (it == entries_.end()) continue;    // removed by an earlier handler in this batch
            if (paused_.count(fd) != 0) continue;  // paused by an earlier handler in this batch
            // Held here, not through `it`: the handler may remove itself (erasing the map node)
            // and then throw, and the log line below still needs its name.
            const std::shared_ptr<const Entry> entry = it->second;
            try {
                entry->handler();
            } catch (const std::exception& e) {
                if (firewall_log_.allow())
                    log_error("event loop: handler for %s failed: %s", entry->name.c_str(), e.what());
            } catch (...) {
                if (firewall_log_.allow())
                    log_error("event loop: handler for %s failed with an unknown exception", entry->name.c_str());
            }
        }
    }
}

SignalFd::SignalFd() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGWINCH);
    sigset_t block = mask;
    sigaddset(&block, SIGPIPE);
    if (::pthread_sigmask(SIG_BLOCK, &block, &old_mask_) != 0) throw SetupError("cannot block SIGINT/SIGTERM");
    fd_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_) {
        int err = errno;
        ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
        throw_errno("signalfd", err);
    }
}

SignalFd::~SignalFd() {
    fd_.reset();
    ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

std::optional<int> SignalFd::read_signal() const {
    signalfd_siginfo info{};
    ssize_t n = ::read(fd_.get(), &info, sizeof info);
    if (n != static_cast<ssize_t>(sizeof info)) return std::nullopt;
    return static_cast<int>(info.ssi_signo);
}

}  // namespace vmm
