// The seam between a virtio transport (virtio-mmio here) and a device model (blk, console, rng,
// net, 9p, iommu). A model knows nothing about transport registers: it describes itself (id,
// features, config, queues) and receives validated queues, its DMA view and a context to signal
// through only at DRIVER_OK (kept in an ActiveQueues, virtio/active_queues.hpp). reset() takes
// them back. Virtio 1.2 sections 2 (basic facilities) and 3.1. Toward the machine a model owns
// its wiring: the host fds it needs served (update_events, on virtio::DeviceEvents), its counters
// for `lkvm stat` (describe) and its fault injection (fail-next); nothing above it knows its type.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
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

// Where a device's host-side events are served: the machine's event loop (virtio/device_events.hpp).
// Called only from inside Device::update_events().
class EventHost {
public:
    // Calls `ready` under the transport lock whenever `fd` is readable (level-triggered), then
    // update_events(), until unwatch(fd). `fd` must not be watched already.
    virtual void watch(int fd, std::string name, std::function<void()> ready) = 0;
    virtual void unwatch(int fd) = 0;
    // Another pass through `queue` (as a kick would give) on a later round of the loop, after the
    // other ready events: for work held back only because a pass ran out of budget.
    virtual void request_pass(std::uint16_t queue) = 0;

protected:
    ~EventHost() = default;
};

struct Activation {
    std::uint64_t features;        // what the driver accepted (FEATURES_OK)
    std::span<Virtqueue*> queues;  // indexed by queue number; nullptr for queues not enabled
    DeviceContext& context;
    const vmm::DmaMemory& memory;  // translated iff ACCESS_PLATFORM was negotiated behind an IOMMU
};

// A device's counters and state for `lkvm stat`, as " key=value" pairs in the order added.
class Description {
public:
    void add(std::string_view key, std::uint64_t value) {
        append_key(key);
        text_ += std::to_string(value);
    }
    // Free text (a backend's one-line summary), quoted.
    void add_text(std::string_view key, std::string_view value) {
        append_key(key);
        ((text_ += '"') += value) += '"';
    }
    const std::string& text() const { return text_; }

private:
    void append_key(std::string_view key) { ((text_ += ' ') += key) += '='; }
    std::string text_;
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

    // Host-side event sources (a NIC backend's fds): called once when the machine starts serving
    // the device and again after every event served for it (a kick, one of its fds), so that
    // the device starts or stops watching (backpressure) and asks for passes. A device that
    // watches nothing on the first call is not asked again.
    virtual void update_events(EventHost& /*host*/) {}

    // Counters and state for `lkvm stat` (through MmioTransport::with_device, like every call).
    virtual void describe(Description& /*out*/) const {}
    // Fault injection (`lkvm debug NAME fail-next`): whether the device has requests it can fail
    // as a failing host backend would answer them, and failing the next `count` of them.
    virtual bool can_fail_requests() const { return false; }
    virtual void fail_next_requests(unsigned /*count*/) {}
};

}  // namespace virtio
