// virtio::QueuePoller: the handover between kicks and polling, first against a fake PollTarget
// (the state machine alone), then against a real MmioTransport driven by the fake driver
// (suppression seen by the driver, requests served without kicks, serialisation with kicks).
#include "virtio/queue_poller.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/fake_driver.hpp"
#include "tests/support/loopback_device.hpp"
#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/mmio_transport.hpp"
#include "virtio/queue.hpp"

using namespace std::chrono_literals;
using support::FakeDriver;
using support::Segment;
using virtio::PollTarget;
using virtio::QueuePoller;
using PollStatus = PollTarget::PollStatus;

namespace {

// Waits for `condition`; the 120 s bound only keeps a broken build from hanging (it returns as
// soon as the condition holds, so a loaded machine only makes it wait longer).
bool eventually(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(200us);
    }
    return condition();
}

// A queue in a box: `pending` buffers the "driver" posted, whether kicks are suppressed, and the
// calls the poller made. A kick is served inline (pending drained) and reported to the observer,
// as MmioTransport does.
class FakeTarget final : public PollTarget {
public:
    PollStatus poll_queue(std::uint16_t queue) override {
        std::unique_lock lock(mutex);
        if (queue != 3) ++wrong_queue;  // (no doctest assertions off the test thread)
        ++polls;
        if (!active) return PollStatus::Inactive;
        suppressed = true;
        // Held: the poller waits in here for the driver's next buffer, so its idle window cannot
        // run out while the test thread is descheduled (no clock decides the test's outcome).
        // (Bounded only so that a failed REQUIRE with `hold` still set cannot hang the poller's
        // join.)
        changed.wait_for(lock, 120s, [&] { return !hold || pending != 0 || !active; });
        if (!active) return PollStatus::Inactive;
        if (pending == 0) return PollStatus::Empty;
        served_by_poller += pending;
        pending = 0;
        return PollStatus::Processed;
    }
    PollStatus unpoll_queue(std::uint16_t) override {
        std::lock_guard lock(mutex);
        ++unpolls;
        if (!active) return PollStatus::Inactive;
        suppressed = false;
        if (race_on_unpoll) {  // a buffer slipped in before the driver saw kicks re-enabled
            race_on_unpoll = false;
            ++pending;
        }
        if (pending == 0) return PollStatus::Empty;
        served_by_poller += pending;
        pending = 0;
        return PollStatus::Processed;
    }
    void set_kick_observer(std::uint16_t queue, virtio::KickObserver* o) override {
        std::lock_guard lock(mutex);
        if (queue != 3) ++wrong_queue;
        observer = o;
    }

    // The driver posts a buffer; it kicks only when kicks are not suppressed.
    void post() {
        std::lock_guard lock(mutex);
        ++pending;
        changed.notify_all();
        if (suppressed || !active) return;
        ++kicks;
        served_inline += pending;
        pending = 0;
        if (observer) observer->kicked(3);
    }
    template <class F>
    auto get(F f) {
        std::lock_guard lock(mutex);
        changed.notify_all();  // f may have changed what a held poll waits for
        return f();
    }

    std::mutex mutex;
    std::condition_variable changed;
    bool hold = false;  // poll_queue() waits for a buffer instead of answering Empty
    bool active = true;
    bool suppressed = false;
    bool race_on_unpoll = false;
    unsigned wrong_queue = 0, pending = 0, kicks = 0, served_inline = 0, served_by_poller = 0, polls = 0, unpolls = 0;
    virtio::KickObserver* observer = nullptr;
};

}  // namespace

TEST_CASE("QueuePoller sleeps until the first kick and hooks itself up as the kick observer") {
    FakeTarget target;
    {
        QueuePoller poller(target, 3, 2ms);
        CHECK(target.get([&] { return target.observer; }) != nullptr);
        std::this_thread::sleep_for(20ms);
        CHECK(target.get([&] { return target.polls + target.unpolls; }) == 0);
        CHECK_FALSE(poller.polling());
        CHECK(poller.stats().wakeups == 0);
    }
    CHECK(target.observer == nullptr);  // unhooked before the thread went
}

TEST_CASE("QueuePoller takes over after a kick, serves buffers without kicks, then hands back") {
    FakeTarget target;
    QueuePoller poller(target, 3, 20ms);
    target.get([&] { return target.hold = true; });  // the phase lasts until released below
    target.post();                                   // kick, served inline, wakes the poller
    CHECK(target.get([&] { return target.kicks; }) == 1);
    REQUIRE(eventually([&] { return target.get([&] { return target.suppressed; }); }));
    // While it polls, buffers need no kick and are served by the poller.
    for (int i = 0; i < 5; ++i) {
        target.post();
        CHECK(eventually([&] { return target.get([&] { return target.pending == 0; }); }));
    }
    CHECK(target.get([&] { return target.kicks; }) == 1);
    CHECK(target.get([&] { return target.served_by_poller; }) == 5);
    target.get([&] { return target.hold = false; });
    // Idle: kicks are re-enabled and the poller sleeps (no more polls).
    REQUIRE(eventually([&] { return target.get([&] { return !target.suppressed; }) && !poller.polling(); }));
    const unsigned polls = target.get([&] { return target.polls; });
    std::this_thread::sleep_for(50ms);
    CHECK(target.get([&] { return target.polls; }) == polls);
    // The next buffer kicks again and starts another phase.
    target.post();
    CHECK(target.get([&] { return target.kicks; }) == 2);
    CHECK(eventually([&] { return poller.stats().wakeups == 2; }));
    const virtio::QueuePollerStats stats = poller.stats();
    CHECK(stats.processed == 5);
    CHECK(stats.late_arrivals == 0);
}

TEST_CASE("QueuePoller keeps polling when buffers turn up as kicks are re-enabled (2.7.10 race)") {
    FakeTarget target;
    QueuePoller poller(target, 3, 5ms);
    target.get([&] { return target.race_on_unpoll = true; });
    target.post();
    REQUIRE(eventually([&] { return poller.stats().late_arrivals == 1; }));
    CHECK(target.get([&] { return target.served_by_poller; }) == 1);  // not lost
    // It went on polling after the late buffer, then handed back once idle.
    CHECK(eventually([&] { return target.get([&] { return target.unpolls; }) >= 2 && !poller.polling(); }));
    CHECK(target.get([&] { return !target.suppressed && target.pending == 0; }));
}

TEST_CASE("QueuePoller goes back to sleep when the queue stops running") {
    FakeTarget target;
    QueuePoller poller(target, 3, 10s);  // only Inactive can end this phase early
    target.post();
    REQUIRE(eventually([&] { return target.get([&] { return target.suppressed; }); }));
    target.get([&] { return target.active = false; });  // reset / NEEDS_RESET
    REQUIRE(eventually([&] { return !poller.polling(); }));
    const unsigned polls = target.get([&] { return target.polls; });
    std::this_thread::sleep_for(30ms);
    CHECK(target.get([&] { return target.polls; }) == polls);
}

TEST_CASE("QueuePoller stops promptly while polling and leaves kicks enabled") {
    FakeTarget target;
    auto poller = std::make_unique<QueuePoller>(target, 3, 10s);
    target.post();
    REQUIRE(eventually([&] { return poller->polling(); }));
    poller->stop();  // returns (a 10 s window does not keep it)
    poller->stop();  // idempotent
    CHECK_FALSE(poller->polling());
    CHECK(target.get([&] { return !target.suppressed && target.observer == nullptr; }));
    poller.reset();
}

// ---- against the real transport ------------------------------------------------------------------

namespace {

// Loopback-like device that also checks nobody else is inside notify() at the same time.
class OverlapDevice final : public virtio::Device {
public:
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    std::atomic<unsigned> served{0};

    std::string_view name() const override { return "overlap"; }
    std::uint32_t device_id() const override { return 0x4c43; }
    std::uint64_t device_features() const override { return features; }
    std::uint16_t queue_count() const override { return 1; }
    std::uint16_t queue_max_size(std::uint16_t) const override { return 64; }
    std::uint32_t config_size() const override { return 0; }
    void read_config(std::uint32_t, std::span<std::uint8_t>) const override {}
    bool activate(const virtio::Activation& a) override {
        queue_ = a.queues[0];
        memory_ = &a.memory;
        return true;
    }
    void reset() override { queue_ = nullptr; }
    void notify(std::uint16_t) override {
        if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
        while (auto chain = queue_->pop()) {
            virtio::ChainWriter writer(*chain, *memory_);
            const std::uint32_t v = 0x600d;
            writer.write_obj(v);
            queue_->add_used(chain->head(), writer.bytes_written());
            served.fetch_add(1);
        }
        inside.fetch_sub(1);
    }
    std::uint64_t features = 0;

private:
    virtio::Virtqueue* queue_ = nullptr;
    const vmm::DmaMemory* memory_ = nullptr;
};

struct TransportFixture {
    OverlapDevice* device;
    FakeDriver driver;
    explicit TransportFixture(bool event_idx) : TransportFixture(std::make_unique<OverlapDevice>(), event_idx) {}
    TransportFixture(std::unique_ptr<OverlapDevice> d, bool event_idx)
        : device(d.get()),
          driver((d->features = event_idx ? virtio::feature_bit(VIRTIO_RING_F_EVENT_IDX) : 0, std::move(d))) {}

    // The driver's kick decision for a batch old..new (Linux virtqueue_kick_prepare_split).
    bool would_kick(std::uint16_t old_idx, std::uint16_t new_idx) {
        if (driver.negotiated() & virtio::feature_bit(VIRTIO_RING_F_EVENT_IDX))
            return vring_need_event(driver.avail_event(0), new_idx, old_idx) != 0;
        return (driver.ram().read_obj<std::uint16_t>(driver.rings(0).used) & VRING_USED_F_NO_NOTIFY) == 0;
    }
    // Posts one request; kicks when the device asks for it (as Linux). Returns whether it kicked.
    bool submit() {
        const std::uint64_t out = driver.ram().alloc(4);
        const std::uint16_t old_idx = driver.avail_idx(0);
        driver.add_chain(0, {Segment{out, 4, true}});
        std::atomic_thread_fence(std::memory_order_seq_cst);
        const bool kick = would_kick(old_idx, driver.avail_idx(0));
        if (kick) driver.kick(0);
        return kick;
    }
};

}  // namespace

TEST_CASE("QueuePoller on MmioTransport: one kick per burst, the rest served without kicks") {
    for (bool event_idx : {false, true}) {
        CAPTURE(event_idx);
        TransportFixture f(event_idx);
        REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 16));
        QueuePoller poller(f.driver.transport(), 0, 1s);
        unsigned kicks = 0, completed = 0;
        CHECK(f.submit());  // the first request of a burst kicks and is served inline
        ++kicks;
        REQUIRE(f.driver.pop_used(0));
        ++completed;
        REQUIRE(eventually([&] {
            return !f.would_kick(f.driver.avail_idx(0), static_cast<std::uint16_t>(f.driver.avail_idx(0) + 1));
        }));
        // The rest of the burst: Linux-style, post and spin on the used ring.
        for (int i = 0; i < 50; ++i) {
            if (f.submit()) ++kicks;
            const bool done = eventually([&] { return f.driver.pop_used(0).has_value(); });
            REQUIRE(done);
            ++completed;
        }
        const virtio::QueuePollerStats st = poller.stats();
        INFO("poller: kicks " << st.kicks << " wakeups " << st.wakeups << " processed " << st.processed << " late "
                              << st.late_arrivals << " window " << st.window_ns);
        CHECK(kicks == 1);
        CHECK(completed == 51);
        CHECK(poller.stats().processed >= 1);
        // Idle: the device asks for kicks again, and the next request is served by its kick.
        REQUIRE(eventually([&] { return !poller.polling(); }));
        CHECK(f.would_kick(f.driver.avail_idx(0), static_cast<std::uint16_t>(f.driver.avail_idx(0) + 1)));
        CHECK(f.submit());
        CHECK(f.driver.pop_used(0));
        CHECK(f.device->overlaps.load() == 0);
        CHECK((f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
    }
}

TEST_CASE("QueuePoller on MmioTransport never processes the queue together with a kicking vCPU") {
    TransportFixture f(true);
    REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 64));
    QueuePoller poller(f.driver.transport(), 0, 50ms);
    // A "vCPU" kicking regardless of suppression (spurious kicks are legal) while requests flow.
    std::atomic<bool> stop{false};
    std::thread vcpu([&] {
        while (!stop.load()) (void)f.driver.transport().notify(0);
    });
    unsigned completed = 0;
    for (int i = 0; i < 300; ++i) {
        f.submit();
        REQUIRE(eventually([&] { return f.driver.pop_used(0).has_value(); }));
        ++completed;
    }
    stop = true;
    vcpu.join();
    CHECK(completed == 300);
    CHECK(f.device->served.load() == 300);
    CHECK(f.device->overlaps.load() == 0);
}

TEST_CASE("QueuePoller on MmioTransport survives a device reset and serves the re-initialised queue") {
    TransportFixture f(true);
    REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 16));
    // A window no stall of the test thread outlasts (halved twice by the unproductive phases
    // below, it is still 15 minutes): the phase only ends when the queue stops running.
    QueuePoller poller(f.driver.transport(), 0, std::chrono::hours(1));
    // What the driver sees: its next buffer needs no kick (the poller suppressed them). polling()
    // alone is not that state: it turns true before the first poll_queue() suppresses kicks.
    auto kicks_suppressed = [&] {
        return !f.would_kick(f.driver.avail_idx(0), static_cast<std::uint16_t>(f.driver.avail_idx(0) + 1));
    };
    CHECK(f.submit());
    REQUIRE(f.driver.pop_used(0));
    REQUIRE(eventually(kicks_suppressed));
    f.driver.reset();  // Status 0: queues gone; the poller finds the queue inactive and sleeps
    REQUIRE(eventually([&] { return !poller.polling(); }));
    REQUIRE(f.driver.start(FakeDriver::kAllFeatures, 16));  // fresh rings, kicks enabled
    CHECK(f.submit());
    REQUIRE(f.driver.pop_used(0));
    REQUIRE(eventually(kicks_suppressed));
    CHECK_FALSE(f.submit());  // polled again: no kick
    CHECK(eventually([&] { return f.driver.pop_used(0).has_value(); }));
}

TEST_CASE("QueuePoller halves an unproductive window down to off, and polls again when kicks come close") {
    FakeTarget target;
    QueuePoller poller(target, 3, 8ms);  // windows 8, 4, 2 ms, then off (below 8 / 4)
    auto phase_over = [&](std::uint64_t wakeups) {
        return eventually([&] { return poller.stats().wakeups == wakeups && !poller.polling(); });
    };
    CHECK(poller.stats().window_ns == 8'000'000);
    target.post();  // the kick's buffer is served inline: the phase finds nothing
    REQUIRE(phase_over(1));
    CHECK(poller.stats().window_ns == 4'000'000);
    std::this_thread::sleep_for(20ms);
    target.post();
    REQUIRE(phase_over(2));
    CHECK(poller.stats().window_ns == 2'000'000);
    std::this_thread::sleep_for(20ms);
    target.post();
    REQUIRE(phase_over(3));
    CHECK(poller.stats().window_ns == 0);
    // Off: kicks far apart are served inline and do not even wake the poller.
    for (int i = 0; i < 3; ++i) {
        std::this_thread::sleep_for(20ms);
        target.post();
    }
    std::this_thread::sleep_for(20ms);
    CHECK(poller.stats().wakeups == 3);
    CHECK(poller.stats().kicks == 6);
    // Two kicks closer than the longest window: a poll would have caught the second; back on.
    // (Retried: a descheduled test thread may leave more than 8 ms between two posts.)
    unsigned posts = 6;
    for (int attempt = 0; attempt < 10'000 && poller.stats().wakeups < 4; ++attempt) {
        target.post();
        target.post();  // at once after the previous one
        posts += 2;
        std::this_thread::sleep_for(1ms);
    }
    REQUIRE(eventually([&] { return poller.stats().wakeups >= 4; }));
    CHECK(eventually(
        [&] { return target.get([&] { return target.served_inline + target.served_by_poller; }) == posts; }));
    CHECK(target.get([&] { return target.wrong_queue; }) == 0);
}

TEST_CASE("QueuePoller doubles the window after a productive phase, up to the maximum") {
    FakeTarget target;
    QueuePoller poller(target, 3, 40ms);
    target.post();
    REQUIRE(eventually([&] { return poller.stats().wakeups == 1 && !poller.polling(); }));
    CHECK(poller.stats().window_ns == 20'000'000);   // unproductive: halved
    target.get([&] { return target.hold = true; });  // the window cannot run out before the next post
    target.post();  // kick: window 20 ms, and this time a buffer follows without a kick
    REQUIRE(eventually([&] { return target.get([&] { return target.suppressed; }); }));
    target.post();
    REQUIRE(eventually([&] { return target.get([&] { return target.pending == 0; }); }));
    target.get([&] { return target.hold = false; });
    REQUIRE(eventually([&] { return poller.stats().wakeups == 2 && !poller.polling(); }));
    CHECK(poller.stats().processed == 1);
    CHECK(poller.stats().window_ns == 40'000'000);
}
