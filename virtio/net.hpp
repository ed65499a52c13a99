// virtio-net device model, one queue pair (virtio 1.2 section 5.1): receiveq 0 carries frames from
// a NetBackend to the guest, transmitq 1 carries the guest's frames to it. MAC and link status in
// the configuration space, mergeable receive buffers, checksum/TSO offloads when the backend
// passes vnet headers through (a tap).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "virtio/active_queues.hpp"
#include "virtio/device.hpp"
#include "virtio/net_backend.hpp"
#include "virtio/queue.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

struct NetOptions {
    std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    std::uint16_t queue_size = 256;
};

// Counters for `lkvm stat`. Drops: rx_dropped = frames the guest had no (big enough) buffer for,
// beyond what the device holds; tx_dropped = frames the backend could not take; tx_errors =
// malformed transmit requests (short or bad vnet header, oversized frame, unreadable buffer).
struct NetStats {
    std::uint64_t rx_packets = 0, rx_bytes = 0, rx_dropped = 0, rx_errors = 0;
    std::uint64_t tx_packets = 0, tx_bytes = 0, tx_dropped = 0, tx_errors = 0;
};

// Threads: every method runs under the owning MmioTransport's lock (Device methods through the
// transport; receive_from_backend() and the backend's service() from the event loop, through
// the EventHost that update_events() watches the backend's fds with).
class Net final : public Device {
public:
    static constexpr std::uint16_t kReceiveQueue = 0;
    static constexpr std::uint16_t kTransmitQueue = 1;
    // An Ethernet frame with a VLAN tag and a 64 KiB GSO payload, plus the vnet header: the
    // largest a tap hands over or a TSO guest sends.
    static constexpr std::size_t kMaxFrame = 65550 + 12;
    // Frames held while the guest has no receive buffers (receive_from_backend() holds one and
    // then leaves the rest in the backend; the bound is a safety net), more are dropped, counted.
    static constexpr std::size_t kMaxPendingFrames = 256;
    // Frames taken from the backend per receive_from_backend() call (the fd stays readable).
    static constexpr std::size_t kReceiveBatch = 64;

    Net(std::unique_ptr<NetBackend> backend, NetOptions options = {});

    std::string_view name() const override { return "virtio-net"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override;
    bool accept_features(std::uint64_t features) override;
    std::uint16_t queue_count() const override { return 2; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override { return queue < 2 ? options_.queue_size : 0; }
    // One frame either way: up to kMaxFrame bytes from the backend, the 12-byte header added on
    // receive when the backend has none, and the num_buffers rewrite in the first buffer of a
    // merged frame.
    std::uint64_t max_request_bytes(std::uint16_t) const override { return kMaxFrame + 12 + sizeof(std::uint16_t); }
    std::uint32_t config_size() const override;
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override;
    bool activate(const Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;
    // The backend's receive_fd() is watched while the guest can take frames (the receive pump
    // below); its service_fd(), if any, always.
    void update_events(EventHost& host) override;
    // The NetStats counters and the backend's summary.
    void describe(Description& out) const override;

    // The backend's receive_fd() is readable: move its frames into the guest's receive buffers.
    void receive_from_backend();
    // A frame waits for receive buffers the driver has not posted: the backend need not be polled
    // until the driver kicks the receive queue (update_events() stops watching receive_fd()
    // meanwhile, so frames queue up in the backend, a tap's kernel queue or slirp's queue, instead
    // of being dropped here). The empty ring asked the driver for that kick (Virtqueue::pop, 2.7.10).
    bool receive_stalled() const { return receiveq() != nullptr && !pending_.empty() && waiting_for_buffers_; }
    // A frame is held only because the pass ran out of budget (Virtqueue::begin_pass), with the
    // driver's buffers still posted: no kick will come for it, so update_events() asks for another
    // pass through the receive queue (notify) soon, after the other ready events.
    bool receive_pass_wanted() const { return receiveq() != nullptr && !pending_.empty() && !waiting_for_buffers_; }

    const NetStats& stats() const { return stats_; }
    std::size_t pending_frames() const { return pending_.size(); }

private:
    Virtqueue* receiveq() const { return active_.queue(kReceiveQueue); }
    Virtqueue* transmitq() const { return active_.queue(kTransmitQueue); }
    enum class Delivery { Done, NoBuffers, Dropped };
    // One frame (vnet header included iff the backend has one) into the receive queue.
    Delivery deliver(std::span<const std::uint8_t> frame);
    Delivery deliver_merged(std::span<const std::uint8_t> header, std::span<const std::uint8_t> payload);
    Delivery deliver_single(std::span<const std::uint8_t> header, std::span<const std::uint8_t> payload);
    void deliver_pending();
    void take_from_backend();
    void hold(std::span<const std::uint8_t> frame);
    // After a round of deliveries: why a held frame (if any) waits, and the used-buffer interrupt.
    void finish_receive();
    void transmit();
    bool transmit_one(const DescriptorChain& chain);

    std::unique_ptr<NetBackend> backend_;
    NetOptions options_;
    NetStats stats_;
    std::deque<std::vector<std::uint8_t>> pending_;
    std::vector<std::uint8_t> scratch_;  // one frame, kMaxFrame bytes
    bool waiting_for_buffers_ = false;   // the held frames wait for the driver, not for a pass
    bool receive_watched_ = false;       // update_events() watches the backend's receive_fd()
    bool service_watched_ = false;

    ActiveQueues active_;
    vmm::RateLimiter log_;
};

}  // namespace virtio
