// NetConfig: one `lkvm run -n/--network SPEC` (one virtio-net device each), as plain data, with its
// parser (used by vmm/cli.cpp) and its checks (used by validate()). kvmtool's parameter names:
//
//   -n mode=user|tap|none[,tapif=NAME][,guest_mac=XX:XX:XX:XX:XX:XX][,host_ip=A.B.C.D]
//      [,guest_ip=A.B.C.D][,hostfwd=tcp:HOSTPORT-GUESTPORT]...
//
//   mode=user   in-process user-mode networking (libslirp; devices/net/slirp_backend.hpp): DHCP,
//               DNS, outbound TCP/UDP without root. The default when no mode is given. host_ip is
//               the gateway/host address (default 10.0.2.2, the /24 around it is the network),
//               guest_ip the address DHCP hands out (default host_ip's network .15); the DNS
//               forwarder is .3. hostfwd= (repeatable, also udp:) forwards a host port to the guest.
//   mode=tap    a tap device: tapif=NAME an existing one (or, as root, a new one of that name);
//               no tapif as root: a new tap lkvm picks. With vnet headers and offloads where the
//               tap allows (devices/net/tap_backend.hpp).
//   mode=none   no device (accepted for kvmtool compatibility).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace devices::net {
struct SlirpOptions;
struct TapOptions;
}  // namespace devices::net

namespace vmm {

enum class NetMode { User, Tap, None };

struct HostForward {
    bool udp = false;
    std::uint16_t host_port = 0;
    std::uint16_t guest_port = 0;
    bool operator==(const HostForward&) const = default;
};

struct NetConfig {
    NetMode mode = NetMode::User;
    std::string tapif;                      // mode=tap: the tap's name; empty: a new one (root)
    std::array<std::uint8_t, 6> mac{};      // all zero: lkvm picks 52:54:00:12:34:(0x56 + index)
    std::uint32_t host_ip = 0x0a000202;     // host order; 10.0.2.2
    std::uint32_t guest_ip = 0;             // host order; 0: host_ip's network .15
    std::vector<HostForward> hostfwd;
    int tap_fd = -1;                        // mode=tap,fd=N: an open tap lkvm was given; -1: none
    bool operator==(const NetConfig&) const = default;
};

// Parses one -n/--network value into `out` (which starts from the defaults). Returns an error
// text naming the bad parameter, or empty.
std::string parse_network(std::string_view spec, NetConfig& out);

// Problems across all -n given (duplicate MACs, the same host port forwarded twice), one line each.
std::vector<std::string> check_networks(const std::vector<NetConfig>& nets);

// The MAC the index-th NIC gets: the configured one, or 52:54:00:12:34:(0x56 + index).
std::array<std::uint8_t, 6> nic_mac(const NetConfig& config, unsigned index);
// guest_ip, or host_ip's /24 network .15.
std::uint32_t nic_guest_ip(const NetConfig& config);

// What the mode=user and mode=tap backends are given (devices/net/ knows nothing of the CLI).
devices::net::SlirpOptions slirp_options(const NetConfig& config);
devices::net::TapOptions tap_options(const NetConfig& config);

std::string format_mac(const std::array<std::uint8_t, 6>& mac);
std::string format_ipv4(std::uint32_t host_order);

}  // namespace vmm
