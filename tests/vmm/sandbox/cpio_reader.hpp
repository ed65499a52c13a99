// A newc cpio reader for the tests (Documentation/driver-api/early-userspace/buffer-format.rst):
// what vmm/sandbox/cpio.hpp writes must read back entry by entry, as the kernel unpacks it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace test_cpio {

struct Entry {
    std::string name;
    std::uint32_t mode = 0;
    std::uint32_t nlink = 0;
    std::uint32_t rdev_major = 0;
    std::uint32_t rdev_minor = 0;
    std::vector<std::uint8_t> data;
};

inline std::optional<std::uint32_t> hex8(std::span<const std::uint8_t> bytes, std::size_t at) {
    if (at + 8 > bytes.size()) return std::nullopt;
    std::uint32_t value = 0;
    for (std::size_t i = at; i < at + 8; ++i) {
        const char c = static_cast<char>(bytes[i]);
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return std::nullopt;
        value = value << 4 | static_cast<std::uint32_t>(digit);
    }
    return value;
}

inline std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

// The entries up to and without the trailer; nullopt when anything is malformed, misaligned or
// the trailer is missing. `start` must be 4-byte aligned; *end is set past the trailer's padding.
inline std::optional<std::vector<Entry>> read(std::span<const std::uint8_t> bytes, std::size_t start = 0,
                                              std::size_t* end = nullptr) {
    std::vector<Entry> entries;
    std::size_t at = start;
    if (at % 4 != 0) return std::nullopt;
    for (;;) {
        if (at + 110 > bytes.size() || std::string(bytes.begin() + at, bytes.begin() + at + 6) != "070701")
            return std::nullopt;
        std::uint32_t field[13];
        for (int i = 0; i < 13; ++i) {
            auto v = hex8(bytes, at + 6 + 8 * static_cast<std::size_t>(i));
            if (!v) return std::nullopt;
            field[i] = *v;
        }
        const std::size_t namesize = field[11], filesize = field[6];
        if (namesize == 0 || at + 110 + namesize > bytes.size() || bytes[at + 110 + namesize - 1] != 0)
            return std::nullopt;
        Entry e;
        e.name.assign(bytes.begin() + at + 110, bytes.begin() + at + 110 + namesize - 1);
        e.mode = field[1];
        e.nlink = field[4];
        e.rdev_major = field[9];
        e.rdev_minor = field[10];
        const std::size_t data_at = align4(at + 110 + namesize);
        if (data_at + filesize > bytes.size()) return std::nullopt;
        for (std::size_t i = at + 110 + namesize; i < data_at; ++i)
            if (bytes[i] != 0) return std::nullopt;
        e.data.assign(bytes.begin() + data_at, bytes.begin() + data_at + filesize);
        at = align4(data_at + filesize);
        if (at > bytes.size()) return std::nullopt;
        if (e.name == "TRAILER!!!") {
            if (end) *end = at;
            return entries;
        }
        entries.push_back(std::move(e));
    }
}

}  // namespace test_cpio
