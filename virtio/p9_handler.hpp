// The seam between the virtio-9p device model (virtio/p9.hpp) and the file service behind it
// (devices/p9/file_server.hpp, the 9P2000.L server over a host directory). The device moves bytes
// between the guest's chains and the handler; it knows nothing of 9P beyond the message size.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace virtio {

// Threads: the device calls every member under its transport's lock.
class P9Handler {
public:
    virtual ~P9Handler() = default;

    // Handles one complete request and builds its reply (at most `reply_limit` bytes) in `reply`.
    // An empty request is a malformed one (the device could not read it whole); an empty reply
    // means there was no room to answer.
    virtual void handle(std::span<const std::uint8_t> request, std::vector<std::uint8_t>& reply,
                        std::uint32_t reply_limit) = 0;
    // Device reset: the driver that comes next starts a new session.
    virtual void reset() = 0;
    // The largest request the device hands over (the negotiated message size).
    virtual std::uint32_t msize() const = 0;
};

}  // namespace virtio
