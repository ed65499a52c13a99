// virtio::DeviceEvents: one virtio-mmio device served on the event loop: its queue doorbells (a
// kick runs the queue, MmioTransport::notify) and the event sources the device asks for
// (Device::update_events: a NIC's backend fds). After every event it served, the device updates
// what it watches. The machine makes one per slot; nothing here knows a device type.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "virtio/device.hpp"
#include "virtio/mmio_transport.hpp"
#include "vmm/base/event_loop.hpp"

namespace virtio {

// One queue's kick as an eventfd (a KVM ioeventfd in the machine).
struct Doorbell {
    int fd = -1;
    std::function<bool()> consume;  // clears the eventfd; true if it had been signalled
    std::function<void()> ring;     // signals it from the host side, as a guest kick would
};

// Threads: everything on the event-loop thread (or before the loop runs). Must be destroyed
// before `loop` and `transport`; the destructor stops watching every fd it added.
class DeviceEvents final : private EventHost {
public:
    // `doorbells` indexed by queue; empty when the device's kicks run inline on the vCPU.
    DeviceEvents(vmm::EventLoop& loop, MmioTransport& transport, std::vector<Doorbell> doorbells);
    ~DeviceEvents();
    DeviceEvents(const DeviceEvents&) = delete;
    DeviceEvents& operator=(const DeviceEvents&) = delete;

private:
    void kick(std::uint16_t queue);
    // Device::update_events under the transport lock, while the device has event sources.
    void update_locked(Device& device);
    void update();
    void stop_watching();

    // EventHost
    void watch(int fd, std::string name, std::function<void()> ready) override;
    void unwatch(int fd) override;
    void request_pass(std::uint16_t queue) override;

    vmm::EventLoop& loop_;
    MmioTransport& transport_;
    std::vector<Doorbell> doorbells_;
    std::set<int> watched_;
    bool has_sources_ = false;  // the device watched something on the first update
};

}  // namespace virtio
