// virtio-mmio transport, version 2 only (virtio 1.2 section 4.2): register file, status state
// machine, feature negotiation and queue setup in front of one virtio::Device model.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "virtio/device.hpp"
#include "virtio/queue.hpp"
#include "virtio/queue_poller.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/dma_memory.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/base/interrupt.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/translator.hpp"

namespace virtio {

// Owns a device model and presents it as a virtio-mmio v2 window (kWindowSize bytes).
//
// Threads and locking: one mutex (mutex_) guards the register state *and* the device model.
//  - vCPU threads call mmio_read()/mmio_write() (a QueueNotify write runs the device inline);
//  - the event-loop thread calls notify(q) when the queue's ioeventfd fires;
//  - a QueuePoller thread calls poll_queue()/unpoll_queue() (virtio/queue_poller.hpp);
//  - host-side producers (console stdin, the IOMMU's fault path) call with_device();
//  - the machine calls reset() on VM reset.
// All of them take mutex_, so the device model sees one caller at a time and needs no lock of its
// own. DeviceContext callbacks (signal_used etc.) run with mutex_ already held: they are only
// valid from inside Device callbacks or a with_device() function.
//
// Wiring with KVM (done by the machine): register an ioeventfd per queue q on
// base + queue_notify_offset(), 4 bytes, datamatch q, and call notify(q) when it fires; the
// InterruptLine is an irqfd bound to the device's edge-triggered SPI.
class MmioTransport final : public vmm::MmioDevice, public PollTarget, private DeviceContext {
public:
    static constexpr std::uint64_t kWindowSize = 0x200;
    static constexpr std::uint32_t kVendorId = 0x4d564b4c;                  // "LKVM", little-endian
    static constexpr std::uint64_t queue_notify_offset() { return 0x050; }  // VIRTIO_MMIO_QUEUE_NOTIFY

    // `irq` and `memory` must outlive the transport.
    MmioTransport(std::unique_ptr<Device> device, vmm::InterruptLine& irq, const vmm::GuestMemory& memory);
    ~MmioTransport() override;
    MmioTransport(const MmioTransport&) = delete;
    MmioTransport& operator=(const MmioTransport&) = delete;

    // Setup time, before the guest runs: the endpoint sits behind an IOMMU, whose view of it is
    // `translator`. Then VIRTIO_F_ACCESS_PLATFORM is offered, and DMA is translated iff the driver
    // accepts it (virtio 1.2 6.1; without it the device uses guest-physical addresses).
    void place_behind_iommu(std::shared_ptr<const vmm::Translator> translator);

    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    // QueueNotify for `queue` from an ioeventfd, i.e. on a thread that serves other devices too
    // (the event loop). Ignored unless DRIVER_OK is set and the device is healthy (CONFORMANCE.md G3);
    // spurious kicks are harmless (2.7.10). One pass hands the device at most one ring's worth of
    // buffers (Virtqueue::begin_pass): true means the driver posted more meanwhile and the caller
    // must arrange another pass later (re-arm the ioeventfd), after the other ready events.
    [[nodiscard]] bool notify(std::uint16_t queue);

    // PollTarget, for a QueuePoller serving `queue` from its own thread (each takes the lock).
    // Both are Inactive unless notify() would reach the device.
    PollStatus poll_queue(std::uint16_t queue) override;
    PollStatus unpoll_queue(std::uint16_t queue) override;
    void set_kick_observer(std::uint16_t queue, KickObserver* observer) override;

    // Runs `fn(Device&)` under the transport lock, for host-side events (input arriving, an IOMMU
    // fault to post). The caller knows the concrete model type it created. A queue the function
    // broke is reported to the driver (NEEDS_RESET) afterwards.
    // Every queue is halted once the driver set FAILED or the device DEVICE_NEEDS_RESET, so `fn`
    // cannot fill the driver's buffers then (2.1.2), and it gets one ring's worth per queue.
    template <class F>
    decltype(auto) with_device(F&& fn) {
        std::lock_guard lock(mutex_);
        begin_pass_locked();
        struct CheckAfter {
            MmioTransport& transport;
            ~CheckAfter() {
                transport.check_queues_locked();
                transport.end_pass_locked();
            }
        } check_after{*this};
        return std::forward<F>(fn)(*device_);
    }

    std::uint16_t queue_count() const { return queue_count_; }
    std::string_view name() const { return name_; }

private:
    struct QueueRegisters {
        std::uint32_t size = 0;
        bool ready = false;
        std::uint64_t desc = 0, avail = 0, used = 0;
    };

    // DeviceContext (called with mutex_ held, from inside the device).
    void signal_used(std::uint16_t queue) override;
    void signal_config_change() override;
    void set_needs_reset() override;

    std::uint32_t read_register(std::uint64_t offset);
    void write_register(std::uint64_t offset, std::uint32_t value);
    void read_config(std::uint64_t offset, std::span<std::uint8_t> data);
    void write_config(std::uint64_t offset, std::span<const std::uint8_t> data);
    void write_status(std::uint32_t value);
    void write_queue_register(std::uint64_t offset, std::uint32_t value);
    bool features_acceptable();
    void activate();
    // One pass; true if the queue's budget ran out with buffers still pending.
    bool notify_locked(std::uint16_t queue);
    // The queue if notify() may reach the device now (CONFORMANCE.md G3, not broken-and-reported,
    // not FAILED).
    Virtqueue* runnable_queue(std::uint16_t queue);
    bool run_device_locked(std::uint16_t queue);
    // A pass (run_device_locked, with_device): used-buffer interrupts the device asks for are
    // raised once, when it ends (end_pass_locked), however many queues it completed on: the
    // driver's handler reads InterruptStatus once and serves every queue (virtio 1.2 4.2.3.4).
    void begin_pass_locked();
    void end_pass_locked();
    // FAILED or DEVICE_NEEDS_RESET: no queue touches a ring again until reset (2.1.2).
    void halt_queues_locked();
    void reset_locked();
    void check_queues_locked();
    std::uint64_t offered_features() const;
    QueueRegisters* selected_queue();

    std::mutex mutex_;
    vmm::InterruptLine& irq_;
    const vmm::GuestMemory& memory_;
    std::shared_ptr<const vmm::Translator> translator_;
    std::string_view name_;
    std::uint16_t queue_count_;
    vmm::RateLimiter log_;

    // Register state (virtio 1.2 4.2.2).
    std::uint8_t status_ = 0;
    std::uint32_t interrupt_status_ = 0;
    bool in_pass_ = false;        // between begin_pass_locked() and end_pass_locked()
    bool vring_irq_due_ = false;  // signal_used() in this pass: raise the interrupt at its end
    std::uint32_t config_generation_ = 0;
    std::uint32_t device_features_sel_ = 0;
    std::uint32_t driver_features_sel_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint32_t queue_sel_ = 0;
    std::vector<QueueRegisters> queue_regs_;

    // Live state between DRIVER_OK and reset. Declared before device_ so the device is destroyed
    // first and never outlives the queues and DMA view it was given.
    bool active_ = false;
    std::optional<vmm::DmaMemory> dma_;
    std::vector<std::unique_ptr<Virtqueue>> queues_;
    std::vector<Virtqueue*> queue_ptrs_;
    std::vector<KickObserver*> kick_observers_;  // index = queue; set by pollers, kept over resets
    std::unique_ptr<Device> device_;
};

}  // namespace virtio
