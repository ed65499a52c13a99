// virtio-mmio v2 register file and device status state machine (virtio 1.2 sections 4.2.2,
// 2.1 "Device Status Field", 2.2 "Feature Bits", 3.1.1 "Driver Requirements: Device Initialization").
#include "virtio/mmio_transport.hpp"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <array>
#include <cstring>
#include <exception>

#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

constexpr std::uint32_t kMagic = 0x74726976;  // "virt" (4.2.2)
constexpr std::uint32_t kVersion = 2;         // modern only; legacy (1) is not implemented

constexpr std::uint8_t kAck = VIRTIO_CONFIG_S_ACKNOWLEDGE;
constexpr std::uint8_t kDriver = VIRTIO_CONFIG_S_DRIVER;
constexpr std::uint8_t kFeaturesOk = VIRTIO_CONFIG_S_FEATURES_OK;
constexpr std::uint8_t kDriverOk = VIRTIO_CONFIG_S_DRIVER_OK;
constexpr std::uint8_t kNeedsReset = VIRTIO_CONFIG_S_NEEDS_RESET;
constexpr std::uint8_t kFailed = VIRTIO_CONFIG_S_FAILED;

// What a driver status write does, keyed by (current driver-set bits, requested bits).
enum class StatusStep : std::uint8_t { SetBits, NegotiateFeatures, Activate };
struct StatusTransition {
    std::uint8_t from;
    std::uint8_t to;
    StatusStep step;
};
// 3.1.1: ACKNOWLEDGE, then DRIVER, then FEATURES_OK (device may refuse), then DRIVER_OK. Writing 0
// (reset), re-writing the current value and adding FAILED are handled before the table; anything
// else is illegal and ignored.
constexpr std::array<StatusTransition, 4> kStatusTransitions{{
    {0, kAck, StatusStep::SetBits},
    {kAck, kAck | kDriver, StatusStep::SetBits},
    {kAck | kDriver, kAck | kDriver | kFeaturesOk, StatusStep::NegotiateFeatures},
    {kAck | kDriver | kFeaturesOk, kAck | kDriver | kFeaturesOk | kDriverOk, StatusStep::Activate},
}};

constexpr std::optional<StatusStep> find_transition(std::uint8_t from, std::uint8_t to) {
    for (const auto& t : kStatusTransitions)
        if (t.from == from && t.to == to) return t.step;
    return std::nullopt;
}
static_assert(find_transition(0, kAck).has_value());
static_assert(!find_transition(0, kAck | kDriver).has_value(), "status bits are set one step at a time");

// Feature bits a device model may contribute: device-type bits (6: 0-23 and 50-127) and the ring
// features our Virtqueue implements. Every other transport bit (packed ring, notification data,
// ring reset, ...) is masked off even if a model claims it, so we never offer what we cannot do.
constexpr std::uint64_t kDeviceFeatureMask = (feature_bit(24) - 1) | ~(feature_bit(50) - 1) |
                                             feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
                                             feature_bit(VIRTIO_RING_F_EVENT_IDX);

constexpr std::uint32_t kInterruptVring = VIRTIO_MMIO_INT_VRING;
constexpr std::uint32_t kInterruptConfig = VIRTIO_MMIO_INT_CONFIG;

std::uint32_t low_half(std::uint64_t v) { return static_cast<std::uint32_t>(v); }
std::uint32_t high_half(std::uint64_t v) { return static_cast<std::uint32_t>(v >> 32); }
void set_low(std::uint64_t& v, std::uint32_t low) { v = (v & ~std::uint64_t{0xffffffff}) | low; }
void set_high(std::uint64_t& v, std::uint32_t high) { v = (v & 0xffffffff) | (std::uint64_t{high} << 32); }

}  // namespace

MmioTransport::MmioTransport(std::unique_ptr<Device> device, vmm::InterruptLine& irq, const vmm::GuestMemory& memory)
    : irq_(irq),
      memory_(memory),
      name_(device->name()),
      queue_count_(device->queue_count()),
      queue_regs_(queue_count_),
      queues_(queue_count_),
      queue_ptrs_(queue_count_, nullptr),
      kick_observers_(queue_count_, nullptr),
      device_(std::move(device)) {}

MmioTransport::~MmioTransport() {
    // Take everything back from the model before the queues and the DMA view disappear.
    std::lock_guard lock(mutex_);
    device_->reset();
}

void MmioTransport::place_behind_iommu(std::shared_ptr<const vmm::Translator> translator) {
    std::lock_guard lock(mutex_);
    translator_ = std::move(translator);
}

std::uint64_t MmioTransport::offered_features() const {
    std::uint64_t features = (device_->device_features() & kDeviceFeatureMask) | feature_bit(VIRTIO_F_VERSION_1);
    if (translator_) features |= feature_bit(VIRTIO_F_ACCESS_PLATFORM);
    return features;
}

void MmioTransport::mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::lock_guard lock(mutex_);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        read_config(offset - VIRTIO_MMIO_CONFIG, data);
        return;
    }
    std::memset(data.data(), 0, data.size());
    // 4.2.2.2: the driver uses only 32-bit wide, aligned accesses to the registers.
    if (data.size() != 4 || offset % 4 != 0) {
        vmm::guest_error(log_, "%.*s: %zu-byte read at register 0x%llx ignored", static_cast<int>(name_.size()),
                         name_.data(), data.size(), static_cast<unsigned long long>(offset));
        return;
    }
    const std::uint32_t value = read_register(offset);
    std::memcpy(data.data(), &value, sizeof value);
}

void MmioTransport::mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    std::lock_guard lock(mutex_);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        write_config(offset - VIRTIO_MMIO_CONFIG, data);
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) {
        vmm::guest_error(log_, "%.*s: %zu-byte write at register 0x%llx ignored", static_cast<int>(name_.size()),
                         name_.data(), data.size(), static_cast<unsigned long long>(offset));
        return;
    }
    std::uint32_t value = 0;
    std::memcpy(&value, data.data(), sizeof value);
    write_register(offset, value);
}

MmioTransport::QueueRegisters* MmioTransport::selected_queue() {
    return queue_sel_ < queue_count_ ? &queue_regs_[queue_sel_] : nullptr;
}

std::uint32_t MmioTransport::read_register(std::uint64_t offset) {
    const QueueRegisters* queue = selected_queue();
    switch (offset) {
        case VIRTIO_MMIO_MAGIC_VALUE: return kMagic;
        case VIRTIO_MMIO_VERSION: return kVersion;
        case VIRTIO_MMIO_DEVICE_ID: return device_->device_id();
        case VIRTIO_MMIO_VENDOR_ID: return kVendorId;
        case VIRTIO_MMIO_DEVICE_FEATURES:
            if (device_features_sel_ == 0) return low_half(offered_features());
            if (device_features_sel_ == 1) return high_half(offered_features());
            return 0;
        case VIRTIO_MMIO_QUEUE_NUM_MAX: {
            // 0 = queue not available (4.2.2). Capped at the split-ring maximum.
            if (!queue) return 0;
            const std::uint16_t max = device_->queue_max_size(static_cast<std::uint16_t>(queue_sel_));
            return max > Virtqueue::kMaxSize ? Virtqueue::kMaxSize : max;
        }
        case VIRTIO_MMIO_QUEUE_READY: return queue && queue->ready ? 1 : 0;
        case VIRTIO_MMIO_INTERRUPT_STATUS: return interrupt_status_;
        case VIRTIO_MMIO_STATUS: return status_;
        case VIRTIO_MMIO_CONFIG_GENERATION: return config_generation_;
        // No shared memory regions: length and base of an absent region read as all ones (4.2.2).
        case VIRTIO_MMIO_SHM_LEN_LOW:
        case VIRTIO_MMIO_SHM_LEN_HIGH:
        case VIRTIO_MMIO_SHM_BASE_LOW:
        case VIRTIO_MMIO_SHM_BASE_HIGH: return 0xffffffff;
        default:
            // Write-only, legacy-only (GuestPageSize, QueueAlign, QueuePFN) and reserved offsets.
            return 0;
    }
}

void MmioTransport::write_register(std::uint64_t offset, std::uint32_t value) {
    switch (offset) {
        case VIRTIO_MMIO_DEVICE_FEATURES_SEL: device_features_sel_ = value; return;
        case VIRTIO_MMIO_DRIVER_FEATURES_SEL: driver_features_sel_ = value; return;
        case VIRTIO_MMIO_DRIVER_FEATURES:
            // Only between DRIVER and FEATURES_OK (3.1.1 step 5): later writes would change what
            // the device already accepted.
            if ((status_ & ~kNeedsReset) != (kAck | kDriver)) {
                vmm::guest_error(log_, "%.*s: DriverFeatures written in status 0x%x", static_cast<int>(name_.size()),
                                 name_.data(), status_);
                return;
            }
            if (driver_features_sel_ == 0) set_low(driver_features_, value);
            else if (driver_features_sel_ == 1) set_high(driver_features_, value);
            return;
        case VIRTIO_MMIO_QUEUE_SEL: queue_sel_ = value; return;
        case VIRTIO_MMIO_QUEUE_NOTIFY:
            // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (4.2.2). The kicking
            // vCPU (a queue without an ioeventfd, as the virtio-iommu's) has no doorbell to re-arm
            // and delays only its own guest: it serves pass after pass until the ring is drained.
            // Bounded by what the driver posts meanwhile, as a kick with a budget would be.
            if (value <= 0xffff)
                while (notify_locked(static_cast<std::uint16_t>(value))) {
                }
            return;
        case VIRTIO_MMIO_INTERRUPT_ACK: interrupt_status_ &= ~value; return;
        case VIRTIO_MMIO_STATUS: write_status(value); return;
        case VIRTIO_MMIO_SHM_SEL: return;  // no regions; reads answer "absent" for any selector
        case VIRTIO_MMIO_QUEUE_NUM:
        case VIRTIO_MMIO_QUEUE_READY:
        case VIRTIO_MMIO_QUEUE_DESC_LOW:
        case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        case VIRTIO_MMIO_QUEUE_USED_LOW:
        case VIRTIO_MMIO_QUEUE_USED_HIGH: write_queue_register(offset, value); return;
        default:
            vmm::guest_error(log_, "%.*s: write to read-only or reserved register 0x%llx ignored",
                             static_cast<int>(name_.size()), name_.data(), static_cast<unsigned long long>(offset));
            return;
    }
}

void MmioTransport::write_queue_register(std::uint64_t offset, std::uint32_t value) {
    QueueRegisters* queue = selected_queue();
    // Linux deactivates each queue with QueueReady = 0 after it reset the device (vm_del_vq):
    // stopping a queue that is not running is a harmless no-op, not a guest error.
    if (offset == VIRTIO_MMIO_QUEUE_READY && value == 0 && (!queue || !queue->ready)) return;
    // Queue setup happens after FEATURES_OK and before DRIVER_OK (3.1.1 step 7), and a queue's
    // registers are only meaningful while it is not ready (4.2.3.2).
    const bool in_setup = (status_ & kFeaturesOk) && !(status_ & (kDriverOk | kFailed));
    const bool writable = queue && in_setup && (offset == VIRTIO_MMIO_QUEUE_READY || !queue->ready);
    if (!writable) {
        vmm::guest_error(log_, "%.*s: queue register 0x%llx written for queue %u in status 0x%x ignored",
                         static_cast<int>(name_.size()), name_.data(), static_cast<unsigned long long>(offset),
                         queue_sel_, status_);
        return;
    }
    switch (offset) {
        case VIRTIO_MMIO_QUEUE_NUM: queue->size = value; return;
        case VIRTIO_MMIO_QUEUE_READY:
            if (value <= 1) queue->ready = value == 1;
            return;
        case VIRTIO_MMIO_QUEUE_DESC_LOW: set_low(queue->desc, value); return;
        case VIRTIO_MMIO_QUEUE_DESC_HIGH: set_high(queue->desc, value); return;
        case VIRTIO_MMIO_QUEUE_AVAIL_LOW: set_low(queue->avail, value); return;
        case VIRTIO_MMIO_QUEUE_AVAIL_HIGH: set_high(queue->avail, value); return;
        case VIRTIO_MMIO_QUEUE_USED_LOW: set_low(queue->used, value); return;
        case VIRTIO_MMIO_QUEUE_USED_HIGH: set_high(queue->used, value); return;
        default: return;
    }
}

void MmioTransport::write_status(std::uint32_t value) {
    if (value == 0) {
        reset_locked();
        return;
    }
    // Only the device sets NEEDS_RESET; a driver echoing it back (read-modify-write) is fine.
    const std::uint8_t current = status_ & ~kNeedsReset;
    const std::uint32_t requested = value & ~std::uint32_t{kNeedsReset};
    if (requested == current) return;
    if (requested <= 0xff && !(current & kFailed) && requested == (current | kFailed)) {
        // 2.1: the driver gave up. The device stays quiet until reset.
        status_ |= kFailed;
        halt_queues_locked();
        return;
    }
    const std::optional<StatusStep> step = (requested <= 0xff && !(current & kFailed))
                                               ? find_transition(current, static_cast<std::uint8_t>(requested))
                                               : std::nullopt;
    if (!step) {
        vmm::guest_error(log_, "%.*s: illegal status transition 0x%x -> 0x%x ignored", static_cast<int>(name_.size()),
                         name_.data(), current, requested);
        return;
    }
    switch (*step) {
        case StatusStep::SetBits: status_ = static_cast<std::uint8_t>(requested | (status_ & kNeedsReset)); return;
        case StatusStep::NegotiateFeatures:
            // 2.2.2: a subset the device cannot accept leaves FEATURES_OK clear; the driver reads
            // the status back and gives up.
            if (features_acceptable()) status_ |= kFeaturesOk;
            return;
        case StatusStep::Activate:
            status_ |= kDriverOk;
            activate();
            return;
    }
}

bool MmioTransport::features_acceptable() {
    const std::uint64_t offered = offered_features();
    if (driver_features_ & ~offered) {
        vmm::guest_error(log_, "%.*s: driver accepted unoffered features 0x%llx", static_cast<int>(name_.size()),
                         name_.data(), static_cast<unsigned long long>(driver_features_ & ~offered));
        return false;
    }
    // CONFORMANCE.md G1: a modern (version 2) device refuses to run without VIRTIO_F_VERSION_1.
    if (!has_feature(driver_features_, VIRTIO_F_VERSION_1)) {
        vmm::guest_error(log_, "%.*s: driver did not accept VIRTIO_F_VERSION_1", static_cast<int>(name_.size()),
                         name_.data());
        return false;
    }
    return device_->accept_features(driver_features_);
}

void MmioTransport::activate() {
    // virtio 1.2 6.1, CONFORMANCE.md G9: translate only if the driver agreed to program the IOMMU
    // for us.
    if (translator_ && has_feature(driver_features_, VIRTIO_F_ACCESS_PLATFORM)) dma_.emplace(memory_, translator_);
    else dma_.emplace(memory_);
    for (std::uint16_t q = 0; q < queue_count_; ++q) {
        const QueueRegisters& regs = queue_regs_[q];
        if (!regs.ready) continue;
        QueueSetupError error = QueueSetupError::BadSize;
        if (regs.size <= Virtqueue::kMaxSize) {
            const QueueLayout layout{static_cast<std::uint16_t>(regs.size), vmm::Iova{regs.desc}, vmm::Iova{regs.avail},
                                     vmm::Iova{regs.used}};
            queues_[q] = Virtqueue::create(layout, device_->queue_max_size(q), *dma_, driver_features_, &error);
        }
        if (!queues_[q]) {
            vmm::guest_error(log_, "%.*s: queue %u rejected at DRIVER_OK: %s", static_cast<int>(name_.size()),
                             name_.data(), q, describe(error));
            set_needs_reset();
            return;
        }
        queues_[q]->limit_request_bytes(device_->max_request_bytes(q));
        queue_ptrs_[q] = queues_[q].get();
    }
    bool ok = false;
    try {
        ok = device_->activate(Activation{driver_features_, queue_ptrs_, *this, *dma_});
    } catch (const std::exception& e) {
        vmm::log_error("%.*s: activation failed: %s", static_cast<int>(name_.size()), name_.data(), e.what());
    }
    if (!ok) {
        vmm::guest_error(log_, "%.*s: device refused activation", static_cast<int>(name_.size()), name_.data());
        set_needs_reset();
        return;
    }
    active_ = true;
}

bool MmioTransport::notify(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    return notify_locked(queue);
}

Virtqueue* MmioTransport::runnable_queue(std::uint16_t queue) {
    // CONFORMANCE.md G3 and 2.1.2: nothing reaches the device before DRIVER_OK, after FAILED or
    // while it waits for a reset; CONFORMANCE.md G6: never a queue the driver did not make ready.
    if (!active_ || (status_ & (kNeedsReset | kFailed)) || queue >= queue_count_) return nullptr;
    return queues_[queue].get();
}

bool MmioTransport::notify_locked(std::uint16_t queue) {
    if (!runnable_queue(queue)) return false;
    const bool more = run_device_locked(queue);
    // After the kick was served: a poller takes over the requests that follow it.
    if (KickObserver* observer = kick_observers_[queue]) observer->kicked(queue);
    return more;
}

MmioTransport::PollStatus MmioTransport::poll_queue(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    Virtqueue* q = runnable_queue(queue);
    if (!q) return PollStatus::Inactive;
    q->disable_notifications();
    if (!q->has_pending()) {
        check_queues_locked();  // the look may have found the ring unreachable
        return q->is_broken() ? PollStatus::Inactive : PollStatus::Empty;
    }
    run_device_locked(queue);  // a pass left over is the poller's next poll_queue()
    return PollStatus::Processed;
}

MmioTransport::PollStatus MmioTransport::unpoll_queue(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    // A queue that stopped running is left alone: a reset brings a fresh one with kicks enabled,
    // and a stopped device touches no ring (CONFORMANCE.md G3, 2.1.2).
    Virtqueue* q = runnable_queue(queue);
    if (!q) return PollStatus::Inactive;
    if (!q->enable_notifications()) {
        check_queues_locked();
        return PollStatus::Empty;
    }
    run_device_locked(queue);  // Processed: the poller keeps polling, also for what is left over
    return PollStatus::Processed;
}

void MmioTransport::set_kick_observer(std::uint16_t queue, KickObserver* observer) {
    std::lock_guard lock(mutex_);
    if (queue < queue_count_) kick_observers_[queue] = observer;
}

void MmioTransport::begin_pass_locked() {
    // One ring's worth per queue and pass: every buffer the driver had posted when the pass
    // began, no more (the vhost "weight"; at most `size` can be outstanding, 2.7).
    for (const auto& q : queues_)
        if (q) q->begin_pass(q->size());
    in_pass_ = true;
}

void MmioTransport::end_pass_locked() {
    in_pass_ = false;
    if (!vring_irq_due_) return;
    vring_irq_due_ = false;
    irq_.trigger();
}

void MmioTransport::halt_queues_locked() {
    for (const auto& q : queues_)
        if (q) q->halt();
}

bool MmioTransport::run_device_locked(std::uint16_t queue) {
    begin_pass_locked();
    try {
        device_->notify(queue);
    } catch (const std::exception& e) {
        // A bug (guest input must never throw); contain it to this device (NEEDS_RESET), not the
        // VMM.
        vmm::log_error("%.*s: exception while processing queue %u: %s", static_cast<int>(name_.size()), name_.data(),
                       queue, e.what());
        set_needs_reset();
    }
    check_queues_locked();
    end_pass_locked();
    Virtqueue* q = runnable_queue(queue);
    return q && q->budget_exhausted() && q->has_pending();
}

void MmioTransport::check_queues_locked() {
    if (!active_ || (status_ & kNeedsReset)) return;
    for (const auto& queue : queues_) {
        if (queue && queue->is_broken()) {
            set_needs_reset();
            return;
        }
    }
}

void MmioTransport::read_config(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::memset(data.data(), 0, data.size());
    const std::size_t size = data.size();
    // 4.2.2.2: 8/16/32-bit accesses, naturally aligned; an aligned 64-bit access is answered too.
    if ((size != 1 && size != 2 && size != 4 && size != 8) || offset % size != 0) {
        vmm::guest_error(log_, "%.*s: unaligned %zu-byte config read at 0x%llx", static_cast<int>(name_.size()),
                         name_.data(), size, static_cast<unsigned long long>(offset));
        return;
    }
    const std::uint32_t config_size = device_->config_size();
    if (offset >= config_size) return;  // beyond the device's config: reads as zero
    const std::uint64_t available = config_size - offset;
    device_->read_config(static_cast<std::uint32_t>(offset), data.first(size < available ? size : available));
}

void MmioTransport::write_config(std::uint64_t offset, std::span<const std::uint8_t> data) {
    const std::size_t size = data.size();
    const std::uint32_t config_size = device_->config_size();
    if ((size != 1 && size != 2 && size != 4 && size != 8) || offset % size != 0 || offset >= config_size ||
        size > config_size - offset) {
        vmm::guest_error(log_, "%.*s: %zu-byte config write at 0x%llx ignored", static_cast<int>(name_.size()),
                         name_.data(), size, static_cast<unsigned long long>(offset));
        return;
    }
    device_->write_config(static_cast<std::uint32_t>(offset), data);
}

void MmioTransport::signal_used(std::uint16_t /*queue*/) {
    if (!active_ || (status_ & kFailed)) return;  // CONFORMANCE.md G3; 2.1: quiet after the driver gave up
    interrupt_status_ |= kInterruptVring;
    if (in_pass_) vring_irq_due_ = true;
    else irq_.trigger();
}

void MmioTransport::signal_config_change() {
    // CONFORMANCE.md G6: a driver that read part of the old config sees the generation move and
    // re-reads.
    ++config_generation_;
    if (!(status_ & kDriverOk)) return;
    interrupt_status_ |= kInterruptConfig;
    irq_.trigger();
}

void MmioTransport::set_needs_reset() {
    if (status_ & kNeedsReset) return;
    vmm::guest_error(log_, "%.*s: device needs reset", static_cast<int>(name_.size()), name_.data());
    status_ |= kNeedsReset;
    halt_queues_locked();
    // CONFORMANCE.md G4 / 2.1.2: with DRIVER_OK set, the driver must be told through a
    // config-change interrupt.
    if (status_ & kDriverOk) {
        interrupt_status_ |= kInterruptConfig;
        irq_.trigger();
    }
}

void MmioTransport::reset_locked() {
    // CONFORMANCE.md G5 / 2.4: the model drops its queues and per-driver state first, then the
    // transport forgets every register; Status reads 0 as soon as this returns.
    device_->reset();
    active_ = false;
    vring_irq_due_ = false;
    for (auto& q : queue_ptrs_) q = nullptr;
    for (auto& q : queues_) q.reset();
    dma_.reset();
    status_ = 0;
    interrupt_status_ = 0;
    device_features_sel_ = 0;
    driver_features_sel_ = 0;
    driver_features_ = 0;
    queue_sel_ = 0;
    for (auto& regs : queue_regs_) regs = QueueRegisters{};
}

}  // namespace virtio
