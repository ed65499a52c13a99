// Test-only virtio::Device: every chain's readable bytes are copied into its writable part (as
// far as they fit) and completed with the bytes written. Records what the transport asked of it,
// so transport tests can see exactly when activate/notify/reset reach a model.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "virtio/chain_io.hpp"
#include "virtio/device.hpp"
#include "virtio/features.hpp"
#include "virtio/queue.hpp"

namespace support {

class LoopbackDevice final : public virtio::Device {
public:
    static constexpr std::uint32_t kDeviceId = 0x4c42;  // not a real virtio id; tests only
    static constexpr std::uint64_t kFeatureA = virtio::feature_bit(0);
    static constexpr std::uint64_t kFeatureB = virtio::feature_bit(1);  // needs A (see accept_features)

    // What the test can observe and steer. Owned by the test, so it survives the device (which
    // the transport owns).
    struct Probe {
        std::uint64_t features = kFeatureA | kFeatureB | virtio::feature_bit(28) | virtio::feature_bit(29);
        std::uint16_t queues = 2;
        std::uint16_t max_size = 64;
        bool refuse_activation = false;
        unsigned activations = 0, resets = 0, notifies = 0;
        std::uint64_t activated_features = 0;
        bool translated = false;
        std::array<std::uint8_t, 12> config{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        unsigned completed = 0;  // chains completed, over all queues
        // Called after each completion, e.g. to play a driver that re-posts what it gets back.
        std::function<void(std::uint16_t queue, std::uint16_t head)> on_completed;
    };

    explicit LoopbackDevice(Probe& probe) : probe_(probe) {}

    std::string_view name() const override { return "loopback"; }
    std::uint32_t device_id() const override { return kDeviceId; }
    std::uint64_t device_features() const override { return probe_.features; }
    bool accept_features(std::uint64_t features) override {
        // A device-specific dependency, so tests can see FEATURES_OK refused for a bad subset.
        return !(features & kFeatureB) || (features & kFeatureA);
    }
    std::uint16_t queue_count() const override { return probe_.queues; }
    std::uint16_t queue_max_size(std::uint16_t) const override { return probe_.max_size; }
    std::uint32_t config_size() const override { return static_cast<std::uint32_t>(probe_.config.size()); }
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override {
        std::memcpy(data.data(), probe_.config.data() + offset, data.size());
    }
    void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) override {
        std::memcpy(probe_.config.data() + offset, data.data(), data.size());
    }
    bool activate(const virtio::Activation& activation) override {
        ++probe_.activations;
        if (probe_.refuse_activation) return false;
        probe_.activated_features = activation.features;
        probe_.translated = activation.memory.is_translated();
        queues_.assign(activation.queues.begin(), activation.queues.end());
        context_ = &activation.context;
        memory_ = &activation.memory;
        return true;
    }
    void reset() override {
        ++probe_.resets;
        queues_.clear();
        context_ = nullptr;
        memory_ = nullptr;
    }
    void notify(std::uint16_t queue) override {
        ++probe_.notifies;
        if (queue >= queues_.size() || !queues_[queue]) return;
        virtio::Virtqueue& q = *queues_[queue];
        while (auto chain = q.pop()) {
            virtio::ChainReader reader(*chain, *memory_);
            virtio::ChainWriter writer(*chain, *memory_);
            // Bounded chunks: a chain may claim up to 4 GiB.
            std::array<std::uint8_t, 4096> chunk;
            while (reader.remaining() != 0 && writer.remaining() != 0) {
                const std::uint64_t n = std::min<std::uint64_t>({chunk.size(), reader.remaining(), writer.remaining()});
                if (!reader.read({chunk.data(), n}) || !writer.write({chunk.data(), n})) break;
            }
            q.add_used(chain->head(), writer.bytes_written());
            ++probe_.completed;
            if (probe_.on_completed) probe_.on_completed(queue, chain->head());
        }
        if (q.needs_notification()) context_->signal_used(queue);
    }

    // For tests that drive the context directly (through MmioTransport::with_device).
    virtio::DeviceContext* context() const { return context_; }

private:
    Probe& probe_;
    std::vector<virtio::Virtqueue*> queues_;
    virtio::DeviceContext* context_ = nullptr;
    const vmm::DmaMemory* memory_ = nullptr;
};

}  // namespace support
