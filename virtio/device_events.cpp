#include "virtio/device_events.hpp"

#include <utility>

namespace virtio {

DeviceEvents::DeviceEvents(vmm::EventLoop& loop, MmioTransport& transport, std::vector<Doorbell> doorbells)
    : loop_(loop), transport_(transport), doorbells_(std::move(doorbells)) {
    std::size_t added = 0;
    try {
        for (; added < doorbells_.size(); ++added)
            loop_.add(doorbells_[added].fd, std::string(transport_.name()) + " queue " + std::to_string(added),
                      [this, q = static_cast<std::uint16_t>(added)] { kick(q); });
        transport_.with_device([this](Device& device) { device.update_events(*this); });
    } catch (...) {
        // Nothing of this object stays in the loop.
        doorbells_.resize(added);
        stop_watching();
        throw;
    }
    has_sources_ = !watched_.empty();
}

DeviceEvents::~DeviceEvents() { stop_watching(); }

void DeviceEvents::stop_watching() {
    for (int fd : watched_) loop_.remove(fd);
    watched_.clear();
    for (const Doorbell& doorbell : doorbells_) loop_.remove(doorbell.fd);
}

void DeviceEvents::kick(std::uint16_t queue) {
    const Doorbell& doorbell = doorbells_[queue];
    // A pass that ran out of budget is continued on a later round of the loop, after the other
    // devices, stdin and the signals that are ready now.
    if (doorbell.consume() && transport_.notify(queue)) doorbell.ring();
    update();
}

void DeviceEvents::update_locked(Device& device) {
    if (has_sources_) device.update_events(*this);
}

void DeviceEvents::update() {
    if (has_sources_) transport_.with_device([this](Device& device) { update_locked(device); });
}

void DeviceEvents::watch(int fd, std::string name, std::function<void()> ready) {
    loop_.add(fd, std::move(name), [this, ready = std::move(ready)] {
        transport_.with_device([&](Device& device) {
            ready();
            update_locked(device);
        });
    });
    watched_.insert(fd);
}

void DeviceEvents::unwatch(int fd) {
    loop_.remove(fd);
    watched_.erase(fd);
}

void DeviceEvents::request_pass(std::uint16_t queue) {
    if (queue < doorbells_.size()) doorbells_[queue].ring();
}

}  // namespace virtio
