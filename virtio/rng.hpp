// virtio-rng (entropy) device model (virtio 1.2 section 5.4): one request queue whose writable
// buffers the device fills with bytes from the host's getrandom().
#pragma once

#include <cstdint>

#include "virtio/active_queues.hpp"
#include "virtio/device.hpp"
#include "virtio/queue.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

// Threads: called only through the owning MmioTransport, under its lock.
class Rng final : public Device {
public:
    // Per request: 5.4.6.1 lets the device write fewer bytes than offered; a cap keeps one chain
    // claiming 4 GiB from stalling the thread.
    static constexpr std::uint32_t kMaxBytesPerRequest = 64 * 1024;

    explicit Rng(std::uint16_t queue_size = 64);

    std::string_view name() const override { return "virtio-rng"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override;
    std::uint16_t queue_count() const override { return 1; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override { return queue == 0 ? queue_size_ : 0; }
    std::uint64_t max_request_bytes(std::uint16_t) const override { return kMaxBytesPerRequest; }
    std::uint32_t config_size() const override { return 0; }
    void read_config(std::uint32_t, std::span<std::uint8_t>) const override {}
    bool activate(const Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;

private:
    std::uint16_t queue_size_;
    ActiveQueues active_;
    vmm::RateLimiter log_;
};

}  // namespace virtio
