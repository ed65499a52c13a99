// virtio::ActiveQueues: what a device model holds from DRIVER_OK until reset, in one place for every
// model: the negotiated features, the queues the driver enabled, the context to signal through and
// the DMA view (virtio 1.2 section 3.1.1 hands them over at DRIVER_OK; section 2.4 takes them back
// on reset). A model keeps one and answers Device::activate()/reset() through it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "virtio/device.hpp"

namespace virtio {

// Called under the owning transport's lock, like the model that holds it (see device.hpp).
class ActiveQueues {
public:
    // DRIVER_OK: keeps `activation` if every queue in `required` is enabled; false (nothing kept)
    // otherwise, and the model answers activate() false (the transport sets NEEDS_RESET).
    bool activate(const Activation& activation, std::initializer_list<std::uint16_t> required = {});
    // Reset: drops everything activate() kept.
    void reset();

    bool active() const { return context_ != nullptr; }
    std::uint64_t features() const { return features_; }
    // Queue `index` while active and enabled by the driver; otherwise nullptr.
    Virtqueue* queue(std::uint16_t index) const { return index < queues_.size() ? queues_[index] : nullptr; }
    // Only while active().
    DeviceContext& context() const { return *context_; }
    const vmm::DmaMemory& memory() const { return *memory_; }

private:
    std::uint64_t features_ = 0;
    std::vector<Virtqueue*> queues_;
    DeviceContext* context_ = nullptr;
    const vmm::DmaMemory* memory_ = nullptr;
};

}  // namespace virtio
