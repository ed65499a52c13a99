// Walking a VFIO info capability chain (include/uapi/linux/vfio.h, struct vfio_info_cap_header):
// cap_offset and each `next` are byte offsets from the start of the info buffer; 0 ends the chain.
// The buffer comes from the host kernel, but every header and body is still bounds-checked so a
// broken chain (or a fuzzed mock) cannot make lkvm read outside it.
#pragma once

#include <linux/vfio.h>

#include <cstdint>
#include <cstring>
#include <span>

namespace devices::vfio {

// Calls fn(id, version, body) for each capability, where body spans from the header to the end
// of the buffer (callers check their own struct size against it). Stops after 64 entries or at
// the first offset that is out of bounds, misaligned or not increasing (a loop).
template <class Fn>
void for_each_info_cap(std::span<const std::uint8_t> buffer, std::uint32_t first, Fn&& fn) {
    std::uint32_t offset = first;
    for (int guard = 0; offset != 0 && guard < 64; ++guard) {
        if (offset % 4 != 0 || offset < sizeof(std::uint32_t) || offset > buffer.size() ||
            buffer.size() - offset < sizeof(vfio_info_cap_header))
            return;
        vfio_info_cap_header header;
        std::memcpy(&header, buffer.data() + offset, sizeof header);
        fn(header.id, header.version, buffer.subspan(offset));
        if (header.next != 0 && header.next <= offset) return;
        offset = header.next;
    }
}

// Copies a T out of `body` if it is large enough.
template <class T>
bool read_cap(std::span<const std::uint8_t> body, T& out) {
    if (body.size() < sizeof(T)) return false;
    std::memcpy(&out, body.data(), sizeof(T));
    return true;
}

}  // namespace devices::vfio
