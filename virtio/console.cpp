// virtio-console, single port without MULTIPORT (virtio 1.2 sections 5.3.2, 5.3.4, 5.3.6).
#include "virtio/console.hpp"

#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

constexpr std::uint32_t kEmergWriteOffset = offsetof(virtio_console_config, emerg_wr);

}  // namespace

Console::Console(std::unique_ptr<ConsoleSink> output, ConsoleOptions options)
    : output_(std::move(output)), options_(options) {
    if (options_.queue_size < 2 || options_.queue_size > Virtqueue::kMaxSize) options_.queue_size = 64;
}

std::uint32_t Console::device_id() const { return VIRTIO_ID_CONSOLE; }

std::uint64_t Console::device_features() const {
    std::uint64_t features = feature_bit(VIRTIO_CONSOLE_F_EMERG_WRITE) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
                             feature_bit(VIRTIO_RING_F_EVENT_IDX);
    if (options_.cols != 0 && options_.rows != 0) features |= feature_bit(VIRTIO_CONSOLE_F_SIZE);
    return features;
}

std::uint32_t Console::config_size() const { return sizeof(virtio_console_config); }

void Console::read_config(std::uint32_t offset, std::span<std::uint8_t> data) const {
    // 5.3.4: cols/rows are valid only with F_SIZE; max_nr_ports (MULTIPORT) and emerg_wr read 0.
    virtio_console_config config{};
    if (has_feature(device_features(), VIRTIO_CONSOLE_F_SIZE)) {
        config.cols = options_.cols;
        config.rows = options_.rows;
    }
    std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(&config) + offset, data.size());
}

void Console::write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
    // 5.3.4: emergency write, one character, usable even before the queues are set up.
    if (offset == kEmergWriteOffset && data.size() == 4) output_->write(data.first(1));
}

bool Console::activate(const Activation& activation) {
    // Either queue may be left disabled: input or output then goes nowhere.
    if (activation.queues.size() < 2 || !active_.activate(activation)) return false;
    deliver_input();
    return true;
}

// Pending input is host state (typed keys), not driver state: it survives a reset.
void Console::reset() { active_.reset(); }

void Console::notify(std::uint16_t queue) {
    if (queue == kReceiveQueue) deliver_input();  // the guest posted receive buffers
    else if (queue == kTransmitQueue) transmit();
}

void Console::receive_input(std::span<const std::uint8_t> bytes) {
    const std::size_t room = kMaxPendingInput - pending_.size();
    const std::size_t taken = std::min(room, bytes.size());
    pending_.insert(pending_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(taken));
    if (taken < bytes.size()) {
        dropped_input_ += bytes.size() - taken;
        vmm::guest_error(log_, "virtio-console: guest not reading input, %zu bytes dropped", bytes.size() - taken);
    }
    deliver_input();
}

void Console::set_size(std::uint16_t cols, std::uint16_t rows) {
    if (!has_feature(device_features(), VIRTIO_CONSOLE_F_SIZE) || cols == 0 || rows == 0) return;
    options_.cols = cols;
    options_.rows = rows;
    if (active_.active()) active_.context().signal_config_change();
}

void Console::deliver_input() {
    Virtqueue* receiveq = active_.queue(kReceiveQueue);
    if (!receiveq || pending_.empty()) return;
    bool used = false;
    // Bounded: each round consumes a chain or the pending input, both finite.
    while (!pending_.empty()) {
        auto chain = receiveq->pop();
        if (!chain) break;
        ChainWriter writer(*chain, active_.memory());
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(pending_.size(), writer.remaining()));
        if (!writer.write({pending_.data(), n}))
            vmm::guest_error(log_, "virtio-console: receive buffer not writable, %zu bytes dropped", n);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
        receiveq->add_used(chain->head(), writer.bytes_written());
        used = true;
    }
    if (used && receiveq->needs_notification()) active_.context().signal_used(kReceiveQueue);
}

void Console::transmit() {
    Virtqueue* transmitq = active_.queue(kTransmitQueue);
    if (!transmitq) return;
    std::array<std::uint8_t, 4096> chunk;
    while (auto chain = transmitq->pop()) {
        ChainReader reader(*chain, active_.memory());
        std::uint64_t left = std::min<std::uint64_t>(reader.remaining(), kMaxTransmit);
        if (reader.remaining() > left) {
            dropped_output_ += reader.remaining() - left;
            vmm::guest_error(log_, "virtio-console: transmit buffer of %llu bytes cut to %zu",
                             static_cast<unsigned long long>(reader.remaining()), kMaxTransmit);
        }
        // In pieces, through a fixed buffer.
        while (left != 0) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk.size()));
            if (!reader.read({chunk.data(), n})) {
                vmm::guest_error(log_, "virtio-console: transmit buffer not readable");
                break;
            }
            output_->write({chunk.data(), n});
            left -= n;
        }
        transmitq->add_used(chain->head(), 0);  // the device wrote nothing into the chain
    }
    if (transmitq->needs_notification()) active_.context().signal_used(kTransmitQueue);
}

}  // namespace virtio
