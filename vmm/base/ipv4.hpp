// IPv4 addresses as lkvm keeps them: a std::uint32_t in host byte order (10.0.2.15 is 0x0a00020f),
// shared by the CLI's network options and the user-mode network backend.
#pragma once

#include <cstdint>
#include <string>

namespace vmm {

inline constexpr std::uint32_t kIpv4Loopback = 0x7f000001;  // 127.0.0.1

// Dotted-quad text ("10.0.2.15").
inline std::string format_ipv4(std::uint32_t host_order) {
    return std::to_string(host_order >> 24) + "." + std::to_string((host_order >> 16) & 0xff) + "." +
           std::to_string((host_order >> 8) & 0xff) + "." + std::to_string(host_order & 0xff);
}

}  // namespace vmm
