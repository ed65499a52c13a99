#include "virtio/active_queues.hpp"

namespace virtio {

bool ActiveQueues::activate(const Activation& activation, std::initializer_list<std::uint16_t> required) {
    for (std::uint16_t index : required)
        if (index >= activation.queues.size() || !activation.queues[index]) return false;
    features_ = activation.features;
    queues_.assign(activation.queues.begin(), activation.queues.end());
    context_ = &activation.context;
    memory_ = &activation.memory;
    return true;
}

void ActiveQueues::reset() {
    features_ = 0;
    queues_.clear();
    context_ = nullptr;
    memory_ = nullptr;
}

}  // namespace virtio
