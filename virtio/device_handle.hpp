// virtio::DeviceHandle<T>: a typed, non-owning reference to a device model of concrete type T and
// the transport that owns it. Whoever creates the model (the Machine) knows its type and hands the
// handle on, so its users call T's own methods without looking the device up by name or casting.
// Every access still runs under the transport lock (MmioTransport::with_device).
#pragma once

#include <utility>

#include "virtio/mmio_transport.hpp"

namespace virtio {

template <class T>
class DeviceHandle {
public:
    DeviceHandle() = default;
    // `device` is the model `transport` owns; both must outlive the handle's use.
    DeviceHandle(MmioTransport& transport, T& device) : transport_(&transport), device_(&device) {}

    explicit operator bool() const { return transport_ != nullptr; }
    MmioTransport& transport() const { return *transport_; }

    // Runs `fn(T&)` under the transport lock; only on a set handle.
    template <class F>
    decltype(auto) with(F&& fn) const {
        return transport_->with_device([&](Device&) -> decltype(auto) { return std::forward<F>(fn)(*device_); });
    }

private:
    MmioTransport* transport_ = nullptr;
    T* device_ = nullptr;
};

}  // namespace virtio
