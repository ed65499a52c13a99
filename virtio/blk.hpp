// virtio-blk device model (virtio 1.2 section 5.2): one request queue; IN, OUT, FLUSH and GET_ID
// on a BlockBackend, every guest buffer reached through ChainReader/ChainWriter over DmaMemory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "virtio/active_queues.hpp"
#include "virtio/block_backend.hpp"
#include "virtio/device.hpp"
#include "virtio/queue.hpp"
#include "vmm/base/log.hpp"

namespace virtio {

struct BlkOptions {
    bool read_only = false;  // offer VIRTIO_BLK_F_RO; OUT and FLUSH answer IOERR
    std::string serial;      // GET_ID answer, truncated to 20 bytes (VIRTIO_BLK_ID_BYTES)
    std::uint16_t queue_size = 256;
};

// Threads: called only through the owning MmioTransport, under its lock (see device.hpp). Host
// I/O is synchronous on that thread.
class Blk final : public Device {
public:
    static constexpr std::uint64_t kSectorSize = 512;  // 5.2.4: capacity is in 512-byte sectors
    // The data one request may carry. Offered as size_max (VIRTIO_BLK_F_SIZE_MAX) times seg_max,
    // so a driver splits larger transfers itself (Linux's default request is 1280 KiB); a request
    // claiming more (descriptors may alias one buffer up to 2^32 bytes) is answered IOERR without
    // moving its data, since serving it would hold the event-loop thread for seconds.
    static constexpr std::uint32_t kSegmentSize = 64 * 1024;
    static constexpr std::uint64_t kMaxRequestData = std::uint64_t{256} * kSegmentSize;  // 16 MiB

    // `backend` size is rounded down to whole sectors.
    Blk(std::unique_ptr<BlockBackend> backend, BlkOptions options);

    std::string_view name() const override { return "virtio-blk"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override;
    std::uint16_t queue_count() const override { return 1; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override { return queue == 0 ? options_.queue_size : 0; }
    // The header, the data twice (read into the buffers, then zeroed after a failed read: see
    // process()) and the status byte.
    std::uint64_t max_request_bytes(std::uint16_t) const override { return 2 * kMaxRequestData + 512; }
    std::uint32_t config_size() const override;
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override;
    bool activate(const Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;

    std::uint64_t capacity_sectors() const { return capacity_bytes_ / kSectorSize; }

    // forced_failures: requests failed on purpose (fail-next).
    void describe(Description& out) const override { out.add("forced_failures", forced_failures_); }
    // Fault injection (`lkvm debug NAME fail-next`): the next `count` requests complete with
    // VIRTIO_BLK_S_IOERR without touching the disk, as a failing host disk would answer them.
    // Under the transport lock, like every call into the device.
    bool can_fail_requests() const override { return true; }
    void fail_next_requests(unsigned count) override { fail_next_ = count; }

private:
    void process(const DescriptorChain& chain);
    std::uint8_t read_request(std::uint64_t sector, const DescriptorChain& chain, std::uint64_t data_len);
    std::uint8_t write_request(std::uint64_t sector, const DescriptorChain& chain);
    std::uint8_t get_id(const DescriptorChain& chain, std::uint64_t data_len);
    bool in_capacity(std::uint64_t sector, std::uint64_t length, std::uint64_t* offset);

    std::unique_ptr<BlockBackend> backend_;
    BlkOptions options_;
    std::uint64_t capacity_bytes_;
    std::vector<std::uint8_t> config_;

    ActiveQueues active_;
    vmm::RateLimiter log_;
    unsigned fail_next_ = 0;
    std::uint64_t forced_failures_ = 0;
};

}  // namespace virtio
