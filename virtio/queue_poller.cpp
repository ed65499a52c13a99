// virtio::QueuePoller (see the header for the state machine).
#include "virtio/queue_poller.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <exception>

#include "vmm/base/log.hpp"

namespace virtio {
namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "the doorbell is a futex word");

std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) {
    // Returns on a wake, a signal, or at once if the word no longer holds `expected`.
    ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
    ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

inline void cpu_relax() {
#if defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#elif defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// Pause between two empty looks at the ring: long enough not to hammer the transport lock a vCPU
// may want, short against the cost of one request.
constexpr unsigned kRelaxPerPoll = 16;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

QueuePoller::QueuePoller(PollTarget& target, std::uint16_t queue, std::chrono::nanoseconds idle)
    : target_(target),
      queue_(queue),
      max_window_ns_(idle.count() > 0 ? idle.count() : 1),
      min_window_ns_(max_window_ns_ / 4 > 0 ? max_window_ns_ / 4 : 1),
      window_ns_(max_window_ns_) {
    thread_ = std::thread([this] { run(); });
    // Hooked only once the thread exists: a kick before this was served inline and needs nobody.
    try {
        target_.set_kick_observer(queue_, this);
    } catch (...) {
        stop_.store(true, std::memory_order_seq_cst);
        wake();
        thread_.join();
        throw;
    }
}

QueuePoller::~QueuePoller() { stop(); }

void QueuePoller::stop() {
    if (!thread_.joinable()) return;
    // First no new kick notices (set_kick_observer takes the transport lock, so no kicked() call
    // is running when it returns), then the thread.
    target_.set_kick_observer(queue_, nullptr);
    stop_.store(true, std::memory_order_seq_cst);
    wake();
    thread_.join();
}

QueuePollerStats QueuePoller::stats() const {
    return {kicks_.load(std::memory_order_relaxed),
            wakeups_.load(std::memory_order_relaxed),
            processed_.load(std::memory_order_relaxed),
            late_arrivals_.load(std::memory_order_relaxed),
            polls_.load(std::memory_order_relaxed),
            static_cast<std::uint64_t>(window_ns_.load(std::memory_order_relaxed))};
}

void QueuePoller::kicked(std::uint16_t queue) noexcept {
    if (queue != queue_) return;
    kicks_.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t now = now_ns();
    const std::int64_t gap = now - last_kick_ns_;
    last_kick_ns_ = now;
    if (window_ns_.load(std::memory_order_relaxed) == 0) {
        // Polling is off. A kick this close after the previous one is a request a poll of the
        // longest window would have caught: try polling again, from the smallest window.
        if (gap > max_window_ns_) return;
        window_ns_.store(min_window_ns_, std::memory_order_relaxed);
    }
    wake();
}

void QueuePoller::adapt(bool productive) {
    const std::int64_t w = window_ns_.load(std::memory_order_relaxed);
    std::int64_t next = 0;
    if (productive) next = w >= max_window_ns_ / 2 ? max_window_ns_ : std::max(2 * w, min_window_ns_);
    else if (w / 2 >= min_window_ns_) next = w / 2;
    window_ns_.store(next, std::memory_order_relaxed);
}

void QueuePoller::wake() {
    doorbell_.fetch_add(1, std::memory_order_seq_cst);
    // Only a sleeping poller needs the syscall; either it sees the new doorbell value before it
    // sleeps, or we see asleep_ (both sides seq_cst).
    if (asleep_.load(std::memory_order_seq_cst)) futex_wake(doorbell_);
}

void QueuePoller::sleep_until_kick(std::uint32_t seen) {
    asleep_.store(true, std::memory_order_seq_cst);
    while (!stop_.load(std::memory_order_seq_cst) && doorbell_.load(std::memory_order_seq_cst) == seen)
        futex_wait(doorbell_, seen);
    asleep_.store(false, std::memory_order_seq_cst);
}

void QueuePoller::run() {
    using Clock = std::chrono::steady_clock;
    using PollStatus = PollTarget::PollStatus;
    // The doorbell's initial value: a kick that came before this thread ran still wakes it.
    std::uint32_t seen = 0;
    try {
        for (;;) {
            sleep_until_kick(seen);
            if (stop_.load(std::memory_order_seq_cst)) break;
            // Kicks during this phase bump the doorbell again: one more phase after it (harmless).
            seen = doorbell_.load(std::memory_order_seq_cst);
            wakeups_.fetch_add(1, std::memory_order_relaxed);
            polling_.store(true, std::memory_order_relaxed);
            bool productive = false;
            Clock::time_point last_work = Clock::now();
            // Bounded by the idle window: every iteration either finds work (a buffer the driver
            // posted, at most as fast as it can post them) or moves closer to the deadline.
            while (!stop_.load(std::memory_order_relaxed)) {
                polls_.fetch_add(1, std::memory_order_relaxed);
                const PollStatus status = target_.poll_queue(queue_);
                if (status == PollStatus::Inactive) break;
                if (status == PollStatus::Processed) {
                    processed_.fetch_add(1, std::memory_order_relaxed);
                    productive = true;
                    last_work = Clock::now();
                    continue;
                }
                const std::chrono::nanoseconds window(window_ns_.load(std::memory_order_relaxed));
                if (Clock::now() - last_work >= window) {
                    if (target_.unpoll_queue(queue_) != PollStatus::Processed) break;
                    late_arrivals_.fetch_add(1, std::memory_order_relaxed);
                    productive = true;
                    last_work = Clock::now();
                    continue;
                }
                for (unsigned i = 0; i < kRelaxPerPoll; ++i) cpu_relax();
            }
            adapt(productive);
            polling_.store(false, std::memory_order_relaxed);
        }
        // Leave the driver kicking: whoever serves the queue next (inline kicks) needs them.
        target_.unpoll_queue(queue_);
    } catch (const std::exception& e) {
        // A bug (the transport contains device exceptions); the queue still works through kicks.
        vmm::log_error("virtio queue poller for queue %u stopped: %s", queue_, e.what());
        try {
            target_.unpoll_queue(queue_);
        } catch (...) {
        }
    }
    polling_.store(false, std::memory_order_relaxed);
}

}  // namespace virtio
