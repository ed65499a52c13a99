// virtio::QueuePoller: adaptive polling of one virtqueue by a host thread, so a driver that
// busy-waits for its buffers (Linux's virtio-iommu syncs every MAP/UNMAP that way,
// drivers/iommu/virtio-iommu.c __viommu_sync_req()) gets them served without a kick, i.e. without a
// VM exit per request.
//
//   asleep ──kick served (inline, by the vCPU)──▶ polling: driver kicks suppressed (2.7.10),
//     ▲                                            avail ring looked at in a loop, every new
//     │                                            buffer processed at once
//     └── idle window with no new buffer: kicks re-enabled, avail looked at once more (the
//         2.7.10 race: a buffer added before the driver saw the re-enable has no kick); buffers
//         found → keep polling, none → asleep until the next kick
//
// The first request of a burst is served by the kick as without a poller; the poller only takes
// over the ones after it.
//
// The window adapts (as KVM's halt polling does): a phase that served something doubles it (up to
// the configured maximum), one that served nothing halves it, and below a quarter of the maximum
// polling is off - kicks are then served inline only and the poller is not even woken, until two
// kicks come closer together than the maximum window (a poll would have caught the second). So a
// guest whose requests are far apart (or a host with no spare CPU, where spinning only steals time
// from the vCPU) pays one clock read per kick and nothing else.
//
// Every step on the queue goes through a PollTarget (the transport), which takes the transport
// lock: the kicking vCPU and the poller never process the queue at once, and a queue that is
// reset, broken or not running yet is simply "inactive" for the poller.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace virtio {

// Told (with the transport lock held, right after a kick of the queue was served) that the driver
// kicked. Must not block or take locks.
class KickObserver {
public:
    virtual void kicked(std::uint16_t queue) noexcept = 0;

protected:
    ~KickObserver() = default;
};

// What a poller needs from a transport (MmioTransport implements it; tests fake it). Each call is
// atomic with respect to the device model (the transport lock).
class PollTarget {
public:
    enum class PollStatus : std::uint8_t {
        Inactive,   // the queue is not running (before DRIVER_OK, reset, NEEDS_RESET, FAILED)
        Empty,      // nothing was pending
        Processed,  // pending buffers were handed to the device
    };
    // Suppresses the driver's kicks for `queue` and processes whatever is pending.
    virtual PollStatus poll_queue(std::uint16_t queue) = 0;
    // Re-enables the driver's kicks, then looks once more: buffers that arrived meanwhile are
    // processed (Processed: keep polling, they may be the start of more).
    virtual PollStatus unpoll_queue(std::uint16_t queue) = 0;
    // `observer` (or nullptr) is told about every served kick of `queue` from now on.
    virtual void set_kick_observer(std::uint16_t queue, KickObserver* observer) = 0;

protected:
    ~PollTarget() = default;
};

struct QueuePollerStats {
    std::uint64_t kicks = 0;          // kicks seen
    std::uint64_t wakeups = 0;        // polling phases started by a kick
    std::uint64_t processed = 0;      // poll_queue() calls that found work (kicks saved)
    std::uint64_t late_arrivals = 0;  // buffers found by the look after re-enabling kicks
    std::uint64_t polls = 0;          // poll_queue() calls in all
    std::uint64_t window_ns = 0;      // the current window (0: polling off until kicks come closer)
};

class QueuePoller final : private KickObserver {
public:
    // Starts the thread (asleep until the first kick). `idle` > 0: the longest the poller keeps
    // polling after the last buffer (the adaptive window starts there). `target` must outlive the
    // poller.
    QueuePoller(PollTarget& target, std::uint16_t queue, std::chrono::nanoseconds idle);
    // Unhooks from the target (no more kick notices), stops and joins the thread.
    ~QueuePoller();
    QueuePoller(const QueuePoller&) = delete;
    QueuePoller& operator=(const QueuePoller&) = delete;

    // Idempotent; the destructor calls it. After it returns the thread has ended and touches the
    // target no more (the queue is left with kicks enabled if it was still running).
    void stop();

    QueuePollerStats stats() const;
    bool polling() const { return polling_.load(std::memory_order_relaxed); }

private:
    void kicked(std::uint16_t queue) noexcept override;
    void run();
    void sleep_until_kick(std::uint32_t seen);
    void wake();

    void adapt(bool productive);

    PollTarget& target_;
    const std::uint16_t queue_;
    const std::int64_t max_window_ns_;
    const std::int64_t min_window_ns_;  // max / 4: below it, polling is off
    std::atomic<std::int64_t> window_ns_;
    std::int64_t last_kick_ns_ = 0;  // written by kicked() only, under the transport lock

    // Doorbell: a generation count bumped by every kick (and by stop()), a futex word. asleep_
    // tells kickers whether a FUTEX_WAKE is needed (Dekker pair, both seq_cst).
    std::atomic<std::uint32_t> doorbell_{0};
    std::atomic<bool> asleep_{false};
    std::atomic<bool> stop_{false};
    std::atomic<bool> polling_{false};

    std::atomic<std::uint64_t> kicks_{0}, wakeups_{0}, processed_{0}, late_arrivals_{0}, polls_{0};
    std::thread thread_;  // last: started when everything above exists
};

}  // namespace virtio
