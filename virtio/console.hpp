// virtio-console device model, single port (virtio 1.2 section 5.3): receiveq 0 carries host input
// to the guest, transmitq 1 carries guest output to a ConsoleSink.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "virtio/active_queues.hpp"
#include "virtio/device.hpp"
#include "virtio/queue.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

// Where guest console output goes (lkvm's stdout: devices::FdOutput; a buffer in tests).
class ConsoleSink {
public:
    virtual ~ConsoleSink() = default;
    virtual void write(std::span<const std::uint8_t> bytes) = 0;
};

struct ConsoleOptions {
    std::uint16_t cols = 0;  // both non-zero: offer VIRTIO_CONSOLE_F_SIZE with this size
    std::uint16_t rows = 0;
    std::uint16_t queue_size = 64;
};

// Threads: every method runs under the owning MmioTransport's lock: Device methods through the
// transport, receive_input()/set_size() through MmioTransport::with_device() from the thread that
// reads host input. Example (machine side):
//   transport.with_device([&](virtio::Device& d) { static_cast<virtio::Console&>(d).receive_input(bytes); });
class Console final : public Device {
public:
    static constexpr std::size_t kMaxPendingInput = 64 * 1024;  // input held while the guest has no buffers
    // Output taken from one transmit buffer; the rest of a larger one is dropped (logged). Linux
    // writes at most 32 KiB per buffer (drivers/char/virtio_console.c); a chain may claim 4 GiB
    // through aliased descriptors, which would otherwise all go to the sink.
    static constexpr std::size_t kMaxTransmit = 64 * 1024;
    static constexpr std::uint16_t kReceiveQueue = 0;
    static constexpr std::uint16_t kTransmitQueue = 1;

    explicit Console(std::unique_ptr<ConsoleSink> output, ConsoleOptions options = {});

    std::string_view name() const override { return "virtio-console"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override;
    std::uint16_t queue_count() const override { return 2; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override { return queue < 2 ? options_.queue_size : 0; }
    std::uint64_t max_request_bytes(std::uint16_t) const override { return kMaxTransmit; }
    std::uint32_t config_size() const override;
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override;
    void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) override;
    bool activate(const Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;

    // Host input for the guest: delivered now if the guest posted receive buffers, otherwise held
    // (at most kMaxPendingInput bytes; the excess is dropped and counted).
    void receive_input(std::span<const std::uint8_t> bytes);
    // New terminal size; the driver is told through a configuration change (5.3.6). Ignored unless
    // the size feature is offered.
    void set_size(std::uint16_t cols, std::uint16_t rows);

    // input_pending: host input held until the guest posts receive buffers;
    // input_dropped: host input beyond kMaxPendingInput while the guest read none;
    // output_dropped: transmit bytes past kMaxTransmit in one buffer.
    void describe(Description& out) const override {
        out.add("input_pending", pending_input());
        out.add("input_dropped", dropped_input_);
        out.add("output_dropped", dropped_output_);
    }

    std::size_t pending_input() const { return pending_.size(); }
    std::uint64_t dropped_output() const { return dropped_output_; }

private:
    void deliver_input();
    void transmit();

    std::unique_ptr<ConsoleSink> output_;
    ConsoleOptions options_;
    std::vector<std::uint8_t> pending_;
    std::uint64_t dropped_input_ = 0;
    std::uint64_t dropped_output_ = 0;

    ActiveQueues active_;
    vmm::RateLimiter log_;
};

}  // namespace virtio
