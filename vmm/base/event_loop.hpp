// The event-loop thread: one epoll set for ioeventfds (virtio queue kicks), stdin (console input)
// and the signalfd (SIGINT/SIGTERM). Each dispatch is wrapped in a firewall: an exception that
// escapes a handler is a bug in that handler; it is logged and the loop (and the VM) go on.
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vmm {

// Not thread-safe except stop(): add/remove/run are called by the thread that runs the loop
// (or before it runs).
class EventLoop {
public:
    using Handler = std::function<void()>;

    EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Calls `handler` on the loop thread whenever `fd` is readable (level-triggered; also on
    // hang-up/error, so handlers see EOF). Throws SetupError on failure.
    void add(int fd, std::string name, Handler handler);
    // Like add(), but false (nothing added) when `fd` cannot be polled (a regular file or
    // /dev/null as stdin).
    bool try_add(int fd, std::string name, Handler handler);
    // Safe from inside a handler (also for the handler's own fd). Forgets a pause too.
    void remove(int fd);
    // Stops watching `fd` for `duration`, then watches it again; the handler stays registered.
    // For a descriptor that stays ready while its handler cannot make progress (a listening
    // socket whose accept() fails with EMFILE): level-triggered, it would be dispatched again at
    // once, for ever, and the loop would spin instead of serving everything else. Safe from
    // inside a handler; pausing a paused fd moves its deadline.
    void pause(int fd, std::chrono::milliseconds duration);
    bool paused(int fd) const { return paused_.count(fd) != 0; }

    // Dispatches until stop(). Returns at once if stop() was already called.
    void run();
    // From any thread (vCPU threads, handlers).
    void stop();
    bool stopped() const;

private:
    // Shared with a running dispatch, so a handler that removes itself (or is replaced) stays
    // alive, name included, until its call and the firewall's log line are over.
    struct Entry {
        std::string name;
        Handler handler;
    };
    using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC, as the timerfd
    bool insert(int fd, std::string name, Handler handler, bool tolerate_unpollable);
    // Watches again every paused fd whose time has come, and arms the timer for the next one.
    void resume_due();

    UniqueFd epoll_;
    UniqueFd wake_;   // eventfd written by stop()
    UniqueFd timer_;  // timerfd: the earliest end of a pause
    std::atomic<bool> stopped_{false};
    std::map<int, std::shared_ptr<const Entry>> entries_;
    std::map<int, Clock::time_point> paused_;  // fd -> when to watch it again
    RateLimiter firewall_log_;
};

// SIGINT, SIGTERM (stop the VM) and SIGWINCH (terminal resized) as a file descriptor. Blocks them in the calling thread
// (do this in main before any thread starts, so every thread inherits the mask) and restores the mask on destruction.
// Also blocks SIGPIPE: a closed stdout must not kill lkvm mid-teardown.
class SignalFd {
public:
    SignalFd();
    ~SignalFd();
    SignalFd(const SignalFd&) = delete;
    SignalFd& operator=(const SignalFd&) = delete;

    int fd() const { return fd_.get(); }
    // The pending signal's number, if any (non-blocking).
    std::optional<int> read_signal() const;

private:
    sigset_t old_mask_;
    UniqueFd fd_;
};

}  // namespace vmm
