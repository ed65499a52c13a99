// virtio-9p device model (virtio 1.2 section 5.11 is reserved for it; the layout is Linux's
// <linux/virtio_9p.h> and net/9p/trans_virtio.c): one request queue; each chain carries one 9P
// request in its device-readable part and receives the reply in its device-writable part. The
// file service is a P9Handler (virtio/p9_handler.hpp; devices::p9::Server implements it); every
// guest buffer is reached through ChainReader / ChainWriter over DmaMemory (so --viommu
// translates it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "virtio/active_queues.hpp"
#include "virtio/device.hpp"
#include "virtio/p9_handler.hpp"
#include "virtio/queue.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

// Threads: called only through the owning MmioTransport, under its lock (see device.hpp); host
// file I/O is synchronous on that thread.
class P9 final : public Device {
public:
    static constexpr std::uint16_t kQueueSize = 128;  // Linux's VIRTQUEUE_NUM in trans_virtio.c
    // The tag must fit the config's u16 length; the mount tag is a kernel string, kept short.
    static constexpr std::size_t kMaxTagLength = 255;

    P9(std::unique_ptr<P9Handler> server, std::string tag);

    std::string_view name() const override { return "virtio-9p"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override;
    std::uint16_t queue_count() const override { return 1; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override { return queue == 0 ? kQueueSize : 0; }
    std::uint32_t config_size() const override { return static_cast<std::uint32_t>(config_.size()); }
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override;
    bool activate(const Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;

private:
    void process(const DescriptorChain& chain);

    std::unique_ptr<P9Handler> server_;
    std::vector<std::uint8_t> config_;
    std::vector<std::uint8_t> request_;
    std::vector<std::uint8_t> reply_;
    ActiveQueues active_;
    vmm::RateLimiter log_;
};

}  // namespace virtio
