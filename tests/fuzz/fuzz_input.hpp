// The fuzz targets' view of libFuzzer's input: fixed-size values taken front to back. Past the
// end, values are zero-filled, so every input, however short, drives the target to completion.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fuzz {

struct Input {
    const std::uint8_t* data;
    std::size_t size;
    std::size_t pos = 0;

    bool empty() const { return pos >= size; }
    std::size_t remaining() const { return size - std::min(pos, size); }

    template <class T>
    T take() {
        T value{};
        const std::size_t n = std::min(sizeof(T), remaining());
        std::memcpy(&value, data + pos, n);
        pos += n;
        return value;
    }
};

}  // namespace fuzz
