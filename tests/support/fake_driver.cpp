// Test-only virtio-mmio driver (see fake_driver.hpp).
#include "tests/support/fake_driver.hpp"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <array>
#include <atomic>
#include <cstring>
#include <string>

namespace support {
namespace {

vmm::GuestRange ram_range(std::uint64_t base, std::uint64_t size) {
    auto range = vmm::GuestRange::make(vmm::GuestPhysAddr{base}, size);
    if (!range) throw std::runtime_error("FakeGuestRam: bad range");
    return *range;
}

// Ring offsets (2.7.6 / 2.7.8).
constexpr std::uint64_t kIdx = 2;
constexpr std::uint64_t kEntries = 4;

}  // namespace

FakeGuestRam::FakeGuestRam(std::uint64_t base, std::uint64_t size)
    : base_(base), size_(size), memory_(std::array{ram_range(base, size)}), next_(base) {}

std::uint64_t FakeGuestRam::alloc(std::uint64_t size, std::uint64_t align) {
    const std::uint64_t start = vmm::align_up(next_, align);
    if (size == 0 || start < next_ || start + size > end() || start + size < start)
        throw std::runtime_error("FakeGuestRam: out of memory (" + std::to_string(size) + " bytes)");
    next_ = start + size;
    fill(start, size, 0);
    return start;
}

void FakeGuestRam::write(std::uint64_t gpa, std::span<const std::uint8_t> bytes) const {
    if (!memory_.write(vmm::GuestPhysAddr{gpa}, bytes)) throw std::runtime_error("FakeGuestRam: write outside RAM");
}

void FakeGuestRam::read(std::uint64_t gpa, std::span<std::uint8_t> bytes) const {
    if (!memory_.read(vmm::GuestPhysAddr{gpa}, bytes)) throw std::runtime_error("FakeGuestRam: read outside RAM");
}

std::vector<std::uint8_t> FakeGuestRam::read_bytes(std::uint64_t gpa, std::size_t length) const {
    std::vector<std::uint8_t> bytes(length);
    read(gpa, bytes);
    return bytes;
}

void FakeGuestRam::fill(std::uint64_t gpa, std::size_t length, std::uint8_t value) const {
    if (length == 0) return;
    std::uint8_t* host = memory_.host_pointer(vmm::GuestPhysAddr{gpa}, length);
    if (!host) throw std::runtime_error("FakeGuestRam: fill outside RAM");
    std::memset(host, value, length);
}

void FakeGuestRam::clear() {
    fill(base_, size_, 0);
    next_ = base_;
}

FakeDriver::FakeDriver(std::unique_ptr<virtio::Device> device, std::shared_ptr<FakeGuestRam> ram,
                       std::shared_ptr<const vmm::Translator> translator)
    : ram_(ram ? std::move(ram) : std::make_shared<FakeGuestRam>()) {
    transport_ = std::make_unique<virtio::MmioTransport>(std::move(device), irq_, ram_->memory());
    if (translator) transport_->place_behind_iommu(std::move(translator));
    queues_.resize(transport_->queue_count());
}

FakeDriver::QueueState& FakeDriver::queue(std::uint16_t q) {
    if (q >= queues_.size() || queues_[q].rings.size == 0) throw std::runtime_error("FakeDriver: queue not set up");
    return queues_[q];
}

const FakeDriver::QueueState& FakeDriver::queue(std::uint16_t q) const {
    if (q >= queues_.size() || queues_[q].rings.size == 0) throw std::runtime_error("FakeDriver: queue not set up");
    return queues_[q];
}

std::uint32_t FakeDriver::read_reg(std::uint32_t offset) {
    std::uint32_t value = 0;
    transport_->mmio_read(offset, {reinterpret_cast<std::uint8_t*>(&value), sizeof value});
    return value;
}

void FakeDriver::write_reg(std::uint32_t offset, std::uint32_t value) {
    transport_->mmio_write(offset, {reinterpret_cast<const std::uint8_t*>(&value), sizeof value});
}

void FakeDriver::read_raw(std::uint64_t offset, std::span<std::uint8_t> data) { transport_->mmio_read(offset, data); }

void FakeDriver::write_raw(std::uint64_t offset, std::span<const std::uint8_t> data) {
    transport_->mmio_write(offset, data);
}

void FakeDriver::reset() {
    write_reg(VIRTIO_MMIO_STATUS, 0);
    negotiated_ = 0;
    for (auto& q : queues_) q = QueueState{};
}

std::uint64_t FakeDriver::device_features() {
    write_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    std::uint64_t features = read_reg(VIRTIO_MMIO_DEVICE_FEATURES);
    write_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    features |= std::uint64_t{read_reg(VIRTIO_MMIO_DEVICE_FEATURES)} << 32;
    return features;
}

bool FakeDriver::negotiate(std::uint64_t wanted) {
    reset();
    write_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    write_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const std::uint64_t accepted = device_features() & wanted;
    write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    write_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<std::uint32_t>(accepted));
    write_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<std::uint32_t>(accepted >> 32));
    write_reg(VIRTIO_MMIO_STATUS, status() | VIRTIO_CONFIG_S_FEATURES_OK);
    negotiated_ = accepted;
    return (status() & VIRTIO_CONFIG_S_FEATURES_OK) != 0;
}

bool FakeDriver::setup_queue(std::uint16_t q, std::uint16_t size) {
    write_reg(VIRTIO_MMIO_QUEUE_SEL, q);
    const std::uint32_t max = read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max == 0 || size > max || q >= queues_.size()) return false;
    QueueRings rings;
    rings.size = size;
    rings.desc = ram_->alloc(16ULL * size, 16);
    rings.avail = ram_->alloc(6 + 2ULL * size, 2);
    rings.used = ram_->alloc(6 + 8ULL * size, 4);
    write_reg(VIRTIO_MMIO_QUEUE_NUM, size);
    write_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<std::uint32_t>(bus(rings.desc)));
    write_reg(VIRTIO_MMIO_QUEUE_DESC_HIGH, static_cast<std::uint32_t>(bus(rings.desc) >> 32));
    write_reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<std::uint32_t>(bus(rings.avail)));
    write_reg(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, static_cast<std::uint32_t>(bus(rings.avail) >> 32));
    write_reg(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<std::uint32_t>(bus(rings.used)));
    write_reg(VIRTIO_MMIO_QUEUE_USED_HIGH, static_cast<std::uint32_t>(bus(rings.used) >> 32));
    write_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    queues_[q] = QueueState{rings, 0, 0};
    return read_reg(VIRTIO_MMIO_QUEUE_READY) == 1;
}

void FakeDriver::driver_ok() { write_reg(VIRTIO_MMIO_STATUS, status() | VIRTIO_CONFIG_S_DRIVER_OK); }

bool FakeDriver::start(std::uint64_t wanted, std::uint16_t queue_size) {
    if (!negotiate(wanted)) return false;
    for (std::uint16_t q = 0; q < queues_.size(); ++q) {
        write_reg(VIRTIO_MMIO_QUEUE_SEL, q);
        const std::uint32_t max = read_reg(VIRTIO_MMIO_QUEUE_NUM_MAX);
        if (max == 0) continue;
        if (!setup_queue(q, static_cast<std::uint16_t>(max < queue_size ? max : queue_size))) return false;
    }
    driver_ok();
    const std::uint32_t s = status();
    return (s & VIRTIO_CONFIG_S_DRIVER_OK) && !(s & VIRTIO_CONFIG_S_NEEDS_RESET);
}

void FakeDriver::write_descriptor(std::uint16_t q, std::uint16_t index, const vring_desc& desc) {
    const QueueState& state = queue(q);
    ram_->write_obj(state.rings.desc + 16ULL * (index % state.rings.size), desc);
}

std::uint16_t FakeDriver::write_chain(std::uint16_t q, std::span<const Segment> segments, ChainLayout layout) {
    QueueState& state = queue(q);
    const std::uint16_t size = state.rings.size;
    auto descriptor = [&](const Segment& s, bool has_next, std::uint16_t next) {
        vring_desc d{};
        d.addr = bus(s.addr);
        d.len = s.len;
        d.flags =
            static_cast<std::uint16_t>((s.writable ? VRING_DESC_F_WRITE : 0) | (has_next ? VRING_DESC_F_NEXT : 0));
        d.next = next;
        return d;
    };
    const std::uint16_t head = state.next_free;
    if (layout == ChainLayout::Indirect) {
        if (segments.empty()) throw std::runtime_error("FakeDriver: empty indirect chain");
        const std::uint64_t table = ram_->alloc(16ULL * segments.size(), 16);
        for (std::size_t i = 0; i < segments.size(); ++i) {
            const bool has_next = i + 1 < segments.size();
            ram_->write_obj(table + 16 * i, descriptor(segments[i], has_next, static_cast<std::uint16_t>(i + 1)));
        }
        vring_desc pointer{};
        pointer.addr = bus(table);
        pointer.len = static_cast<std::uint32_t>(16 * segments.size());
        pointer.flags = VRING_DESC_F_INDIRECT;
        write_descriptor(q, head, pointer);
        state.next_free = static_cast<std::uint16_t>((head + 1) % size);
        return head;
    }
    if (segments.empty() || segments.size() > size) throw std::runtime_error("FakeDriver: bad direct chain length");
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const auto index = static_cast<std::uint16_t>((head + i) % size);
        const auto next = static_cast<std::uint16_t>((index + 1) % size);
        write_descriptor(q, index, descriptor(segments[i], i + 1 < segments.size(), next));
    }
    state.next_free = static_cast<std::uint16_t>((head + segments.size()) % size);
    return head;
}

void FakeDriver::publish(std::uint16_t q, std::uint16_t head) {
    const QueueState& state = queue(q);
    const std::uint16_t idx = avail_idx(q);
    ram_->write_obj<std::uint16_t>(state.rings.avail + kEntries + 2ULL * (idx % state.rings.size), head);
    std::atomic_thread_fence(std::memory_order_release);
    set_avail_idx(q, static_cast<std::uint16_t>(idx + 1));
}

std::uint16_t FakeDriver::add_chain(std::uint16_t q, std::span<const Segment> segments, ChainLayout layout) {
    const std::uint16_t head = write_chain(q, segments, layout);
    publish(q, head);
    return head;
}

std::uint16_t FakeDriver::avail_idx(std::uint16_t q) const {
    return ram_->read_obj<std::uint16_t>(queue(q).rings.avail + kIdx);
}

void FakeDriver::set_avail_idx(std::uint16_t q, std::uint16_t idx) {
    ram_->write_obj<std::uint16_t>(queue(q).rings.avail + kIdx, idx);
}

void FakeDriver::set_avail_flags(std::uint16_t q, std::uint16_t flags) {
    ram_->write_obj<std::uint16_t>(queue(q).rings.avail, flags);
}

void FakeDriver::set_used_event(std::uint16_t q, std::uint16_t idx) {
    const QueueRings& r = queue(q).rings;
    ram_->write_obj<std::uint16_t>(r.avail + kEntries + 2ULL * r.size, idx);
}

std::uint16_t FakeDriver::avail_event(std::uint16_t q) const {
    const QueueRings& r = queue(q).rings;
    return ram_->read_obj<std::uint16_t>(r.used + kEntries + 8ULL * r.size);
}

std::uint16_t FakeDriver::used_idx(std::uint16_t q) const {
    return ram_->read_obj<std::uint16_t>(queue(q).rings.used + kIdx);
}

std::optional<vring_used_elem> FakeDriver::pop_used(std::uint16_t q) {
    QueueState& state = queue(q);
    if (used_idx(q) == state.last_used) return std::nullopt;
    std::atomic_thread_fence(std::memory_order_acquire);
    const auto elem =
        ram_->read_obj<vring_used_elem>(state.rings.used + kEntries + 8ULL * (state.last_used % state.rings.size));
    ++state.last_used;
    // Like a Linux driver with callbacks enabled: ask for an interrupt at the next used buffer.
    if (auto_used_event_ && (negotiated_ & (std::uint64_t{1} << VIRTIO_RING_F_EVENT_IDX)))
        set_used_event(q, state.last_used);
    return elem;
}

std::uint64_t FakeDriver::read_config(std::uint32_t offset, unsigned size) {
    std::uint64_t value = 0;
    read_raw(VIRTIO_MMIO_CONFIG + offset, {reinterpret_cast<std::uint8_t*>(&value), size});
    return value;
}

void FakeDriver::write_config(std::uint32_t offset, unsigned size, std::uint64_t value) {
    write_raw(VIRTIO_MMIO_CONFIG + offset, {reinterpret_cast<const std::uint8_t*>(&value), size});
}

}  // namespace support
