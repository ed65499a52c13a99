// The seam between a virtio transport (virtio-mmio here) and a device model (blk, console, rng,
// iommu). A model knows nothing about transport registers: it describes itself (id, features,
// config, queues) and receives validated queues, its DMA view and a context to signal through
// only at DRIVER_OK. reset() takes them back. Virtio 1.2 sections 2 (basic facilities) and 3.1.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "vmm/base/dma_memory.hpp"

namespace virtio {

class Virtqueue;

// Implemented by the transport; handed to the device at activation.
class DeviceContext {
public:
    // Used-buffer notification for `queue` (the caller already consulted the queue's
    // notification suppression, see Virtqueue::needs_notification()).
    virtual void signal_used(std::uint16_t queue) = 0;
    // The device changed its configuration space (virtio 1.2 section 2.5.1).
    virtual void signal_config_change() = 0;
    // Unrecoverable error: sets DEVICE_NEEDS_RESET and raises a configuration-change interrupt
    // (virtio 1.2 section 2.1.1). The device stops using its queues until reset.
    virtual void set_needs_reset() = 0;

protected:
    ~DeviceContext() = default;
};

struct Activation {
    std::uint64_t features;           // what the driver accepted (FEATURES_OK)
    std::span<Virtqueue*> queues;     // indexed by queue number; nullptr for queues not enabled
    DeviceContext& context;
    const vmm::DmaMemory& memory;     // translated iff ACCESS_PLATFORM was negotiated behind an IOMMU
};

// Called by the transport with its lock held, so a model needs no locking of its own for state
// touched only through these calls.
class Device {
public:
    virtual ~Device() = default;

    virtual std::string_view name() const = 0;
    virtual std::uint32_t device_id() const = 0;  // VIRTIO_ID_* from <linux/virtio_ids.h>
    // Device-type features plus the ring features the model supports (INDIRECT_DESC, EVENT_IDX).
    // The transport adds VIRTIO_F_VERSION_1 and, behind an IOMMU, VIRTIO_F_ACCESS_PLATFORM.
    virtual std::uint64_t device_features() const = 0;
    // FEATURES_OK: false refuses the subset (the transport then leaves FEATURES_OK clear).
    virtual bool accept_features(std::uint64_t /*features*/) { return true; }

    virtual std::uint16_t queue_count() const = 0;
    virtual std::uint16_t queue_max_size(std::uint16_t queue) const = 0;
    // The most one request on `queue` may move, read plus written, however large its chain
    // claims to be (descriptors may alias: 2^32 bytes in one buffer repeated). Enforced in shared
    // code (DescriptorChain::charge); a model that knows a smaller bound checks it up front to
    // answer in the protocol. The default fits a 9p message and every small request.
    static constexpr std::uint64_t kDefaultMaxRequestBytes = std::uint64_t{16} << 20;
    virtual std::uint64_t max_request_bytes(std::uint16_t /*queue*/) const { return kDefaultMaxRequestBytes; }

    // Device configuration space. The transport has checked offset + size <= config_size().
    virtual std::uint32_t config_size() const = 0;
    virtual void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const = 0;
    virtual void write_config(std::uint32_t /*offset*/, std::span<const std::uint8_t> /*data*/) {}

    // DRIVER_OK. false means the device cannot run with what the driver set up (NEEDS_RESET).
    virtual bool activate(const Activation& activation) = 0;
    // Status written 0 (or VM reset): drop queues and every per-driver state (virtio 1.2 2.4).
    virtual void reset() = 0;
    // The driver kicked `queue` (only after activate()).
    virtual void notify(std::uint16_t queue) = 0;
};

}  // namespace virtio
