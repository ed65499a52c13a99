// Test-only virtio driver: plays the guest against a real virtio::MmioTransport, through its MMIO
// registers only, with split rings laid out in fake guest RAM (virtio 1.2 3.1.1, 2.7, 4.2.3).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "tests/support/recording_interrupt.hpp"
#include "virtio/device.hpp"
#include "virtio/mmio_transport.hpp"
#include "virtio/ring.hpp"
#include "vmm/base/guest_memory.hpp"

namespace support {

// Guest RAM for tests: one region plus a bump allocator. Several drivers may share one (e.g. a
// virtio-iommu and the endpoints behind it). Misuse (exhaustion, access outside RAM) throws
// std::runtime_error, which doctest reports as a failed test.
class FakeGuestRam {
public:
    static constexpr std::uint64_t kDefaultBase = 0x4000'0000;
    static constexpr std::uint64_t kDefaultSize = 4 << 20;

    explicit FakeGuestRam(std::uint64_t base = kDefaultBase, std::uint64_t size = kDefaultSize);

    const vmm::GuestMemory& memory() const { return memory_; }
    std::uint64_t base() const { return base_; }
    std::uint64_t end() const { return base_ + size_; }  // first address past RAM

    // Zeroed, `align`-aligned guest-physical space that is never handed out twice.
    std::uint64_t alloc(std::uint64_t size, std::uint64_t align = 16);

    void write(std::uint64_t gpa, std::span<const std::uint8_t> bytes) const;
    void read(std::uint64_t gpa, std::span<std::uint8_t> bytes) const;
    std::vector<std::uint8_t> read_bytes(std::uint64_t gpa, std::size_t length) const;
    void fill(std::uint64_t gpa, std::size_t length, std::uint8_t value) const;
    // Back to the state of a fresh RAM (all zero, nothing handed out), for a fuzz harness that
    // reuses one RAM across inputs instead of faulting in a new mapping for each.
    void clear();
    template <class T>
    void write_obj(std::uint64_t gpa, const T& value) const {
        static_assert(std::is_trivially_copyable_v<T>);
        write(gpa, {reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)});
    }
    template <class T>
    T read_obj(std::uint64_t gpa) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        read(gpa, {reinterpret_cast<std::uint8_t*>(&value), sizeof(T)});
        return value;
    }

private:
    std::uint64_t base_;
    std::uint64_t size_;
    vmm::GuestMemory memory_;
    std::uint64_t next_;
};

// One buffer of a chain, by guest-physical address in the fake RAM (translated to a bus address
// with the driver's bus mapping when written into a descriptor).
struct Segment {
    std::uint64_t addr = 0;
    std::uint32_t len = 0;
    bool writable = false;
};

enum class ChainLayout { Direct, Indirect };

// Where one queue's rings live (guest-physical).
struct QueueRings {
    std::uint16_t size = 0;
    std::uint64_t desc = 0, avail = 0, used = 0;
};

class FakeDriver {
public:
    static constexpr std::uint64_t kAllFeatures = ~std::uint64_t{0};

    // Wraps `device` in a transport on fresh RAM, or on `ram` when sharing it with another driver.
    // With `translator`, the transport is placed behind an IOMMU (ACCESS_PLATFORM offered).
    explicit FakeDriver(std::unique_ptr<virtio::Device> device, std::shared_ptr<FakeGuestRam> ram = nullptr,
                        std::shared_ptr<const vmm::Translator> translator = nullptr);

    virtio::MmioTransport& transport() { return *transport_; }
    RecordingInterrupt& irq() { return irq_; }
    FakeGuestRam& ram() { return *ram_; }
    std::shared_ptr<FakeGuestRam> shared_ram() const { return ram_; }

    // Addresses the driver puts on the bus (ring registers, descriptors) are f(gpa); identity by
    // default. Behind an IOMMU, set this to the IOVA layout the test mapped.
    void set_bus_mapping(std::function<std::uint64_t(std::uint64_t)> to_bus) { to_bus_ = std::move(to_bus); }
    std::uint64_t bus(std::uint64_t gpa) const { return to_bus_ ? to_bus_(gpa) : gpa; }

    // ---- raw register access (4-byte, as a Linux driver does) and any-size access for negative tests
    std::uint32_t read_reg(std::uint32_t offset);
    void write_reg(std::uint32_t offset, std::uint32_t value);
    void read_raw(std::uint64_t offset, std::span<std::uint8_t> data);
    void write_raw(std::uint64_t offset, std::span<const std::uint8_t> data);
    std::uint32_t status() { return read_reg(0x070); }

    // ---- initialisation (3.1.1), step by step or all at once
    void reset();
    std::uint64_t device_features();
    // reset, ACKNOWLEDGE, DRIVER, accept device_features() & wanted, FEATURES_OK. True if
    // FEATURES_OK stuck.
    bool negotiate(std::uint64_t wanted = kAllFeatures);
    std::uint64_t negotiated() const { return negotiated_; }
    // Allocates zeroed rings of `size` entries and programs them; QueueReady = 1. False if the
    // queue is absent (QueueNumMax 0) or smaller than `size`.
    bool setup_queue(std::uint16_t queue, std::uint16_t size);
    void driver_ok();
    // negotiate + every queue at min(QueueNumMax, queue_size) + DRIVER_OK. True if the device
    // ended in DRIVER_OK without NEEDS_RESET.
    bool start(std::uint64_t wanted = kAllFeatures, std::uint16_t queue_size = 16);

    // ---- rings
    const QueueRings& rings(std::uint16_t queue) const { return queues_.at(queue).rings; }
    // Writes the descriptors of a chain (Direct: consecutive free table slots; Indirect: a table in
    // fresh RAM and one slot pointing at it) without making it available. Returns the head.
    std::uint16_t write_chain(std::uint16_t queue, std::span<const Segment> segments,
                              ChainLayout layout = ChainLayout::Direct);
    // Makes `head` available: avail.ring[idx % size] = head, then idx + 1 (write barrier between).
    void publish(std::uint16_t queue, std::uint16_t head);
    // write_chain + publish.
    std::uint16_t add_chain(std::uint16_t queue, std::span<const Segment> segments,
                            ChainLayout layout = ChainLayout::Direct);
    std::uint16_t add_chain(std::uint16_t queue, std::initializer_list<Segment> segments,
                            ChainLayout layout = ChainLayout::Direct) {
        return add_chain(queue, std::span<const Segment>(segments.begin(), segments.size()), layout);
    }
    void write_descriptor(std::uint16_t queue, std::uint16_t index, const vring_desc& desc);
    void kick(std::uint16_t queue) { write_reg(0x050, queue); }

    std::uint16_t avail_idx(std::uint16_t queue) const;
    void set_avail_idx(std::uint16_t queue, std::uint16_t idx);
    void set_avail_flags(std::uint16_t queue, std::uint16_t flags);
    void set_used_event(std::uint16_t queue, std::uint16_t idx);
    void set_auto_used_event(bool on) { auto_used_event_ = on; }
    std::uint16_t avail_event(std::uint16_t queue) const;
    std::uint16_t used_idx(std::uint16_t queue) const;
    // The next used element the driver has not seen yet, if the device published one. With
    // EVENT_IDX and set_auto_used_event(true), also moves used_event past it (as a Linux driver
    // with callbacks enabled does); by default used_event is left to the test.
    std::optional<vring_used_elem> pop_used(std::uint16_t queue);

    // ---- device configuration space (offset inside the config, access size 1, 2, 4 or 8)
    std::uint64_t read_config(std::uint32_t offset, unsigned size);
    void write_config(std::uint32_t offset, unsigned size, std::uint64_t value);

private:
    struct QueueState {
        QueueRings rings;
        std::uint16_t next_free = 0;  // next descriptor slot handed out (round robin)
        std::uint16_t last_used = 0;  // used idx the driver has consumed up to
    };
    QueueState& queue(std::uint16_t q);
    const QueueState& queue(std::uint16_t q) const;

    std::shared_ptr<FakeGuestRam> ram_;
    RecordingInterrupt irq_;
    std::unique_ptr<virtio::MmioTransport> transport_;
    std::function<std::uint64_t(std::uint64_t)> to_bus_;
    std::uint64_t negotiated_ = 0;
    bool auto_used_event_ = false;
    std::vector<QueueState> queues_;
};

}  // namespace support
