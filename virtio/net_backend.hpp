// The seam between the virtio-net device model (virtio/net.hpp) and where its frames go: libslirp
// (devices/net/slirp_backend.hpp), a tap (devices/net/tap_backend.hpp), a fake in the unit tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace virtio {

// Threads: the device calls send()/receive() under its transport's lock; a backend with its own
// activity (slirp's sockets and timers) synchronizes that with these calls itself.
class NetBackend {
public:
    virtual ~NetBackend() = default;

    // "user", "tap": for logs and `lkvm stat`.
    virtual std::string_view kind() const = 0;
    // One line for `lkvm stat` (e.g. "tap0 vnet_hdr", "10.0.2.15/24 via 10.0.2.2").
    virtual std::string describe() const { return std::string(kind()); }

    // Whether frames carry a virtio_net_hdr_v1 in front in both directions (a tap with
    // IFF_VNET_HDR). Without one the device strips it on transmit and adds an empty one on receive.
    virtual bool has_vnet_header() const { return false; }
    // VIRTIO_NET_F_* offload bits the backend handles (CSUM, HOST_TSO*, GUEST_CSUM, GUEST_TSO*);
    // only meaningful with a vnet header.
    virtual std::uint64_t offload_features() const { return 0; }
    // At DRIVER_OK: the negotiated features, so the backend delivers only the receive offloads the
    // driver accepted (TUNSETOFFLOAD). false: it could not; the device then fails activation.
    virtual bool set_offloads(std::uint64_t /*features*/) { return true; }

    // Guest -> network: one frame (with the vnet header iff has_vnet_header()). false: the
    // backend cannot take it now (full) or refused it; the device counts it as dropped.
    virtual bool send(std::span<const std::uint8_t> frame) = 0;
    // After a run of send() calls (one transmit pass): bookkeeping a backend would otherwise do
    // per frame (slirp's fd set and timer) is done once here.
    virtual void flush() {}
    // Network -> guest: the next frame (with the vnet header iff has_vnet_header()) into
    // `buffer`, its length; 0 when none is ready. A frame longer than `buffer` is dropped by the
    // backend.
    virtual std::size_t receive(std::span<std::uint8_t> buffer) = 0;
    // Readable while receive() has a frame (level-triggered); the machine polls it.
    virtual int receive_fd() const = 0;
    // A backend with work of its own (slirp's sockets and timers): readable when service()
    // should run, on the event loop's thread. -1: none.
    virtual int service_fd() const { return -1; }
    virtual void service() {}
};

}  // namespace virtio
