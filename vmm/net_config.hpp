// NetConfig: one `lkvm run -n/--network SPEC` (one virtio-net device each), as plain data, with its
// parser (used by vmm/cli.cpp) and its checks (used by validate()). kvmtool's parameter names:
//
//   -n mode=user|tap|none[,tapif=NAME][,guest_mac=XX:XX:XX:XX:XX:XX][,host_ip=A.B.C.D]
//      [,guest_ip=A.B.C.D][,hostfwd=tcp:[ADDR:]HOSTPORT-[GUESTADDR:]GUESTPORT]...
//      [,host_loopback=on|off][,restrict=on|off]
//
//   mode=user   in-process user-mode networking (libslirp; devices/net/slirp_backend.hpp): DHCP,
//               DNS, outbound TCP/UDP without root. The default when no mode is given. host_ip is
//               the gateway/host address (default 10.0.2.2, the /24 around it is the network),
//               guest_ip the address DHCP hands out (default host_ip's network .15); the DNS
//               forwarder is .3. hostfwd= (repeatable, also udp:) forwards a host port to the guest,
//               listening on 127.0.0.1 unless ADDR is given (0.0.0.0: every address).
//               host_loopback=off: connections to host_ip no longer reach the host's loopback
//               services (the default is on for `run`, off for `sandbox`). restrict=on: the guest
//               reaches nothing outside (QEMU's restrict=on); hostfwd still forwards into it.
//   mode=tap    a tap device: tapif=NAME an existing one (or, as root, a new one of that name);
//               no tapif as root: a new tap lkvm picks. With vnet headers and offloads where the
//               tap allows (devices/net/tap_backend.hpp).
//   mode=none   no device (accepted for kvmtool compatibility).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/ipv4.hpp"

namespace devices::net {
struct SlirpOptions;
struct TapOptions;
}  // namespace devices::net

namespace vmm {

enum class NetMode { User, Tap, None };

struct HostForward {
    bool udp = false;
    std::uint32_t host_addr = kIpv4Loopback;  // host order; where to listen (0: every address)
    std::uint16_t host_port = 0;
    std::uint32_t guest_addr = 0;  // host order; 0: the NIC's guest_ip
    std::uint16_t guest_port = 0;
    bool operator==(const HostForward&) const = default;
};

struct NetConfig {
    NetMode mode = NetMode::User;
    std::string tapif;                   // mode=tap: the tap's name; empty: a new one (root)
    std::array<std::uint8_t, 6> mac{};   // all zero: lkvm picks 52:54:00:12:34:(0x56 + index)
    std::uint32_t host_ip = 0x0a000202;  // host order; 10.0.2.2
    std::uint32_t guest_ip = 0;          // host order; 0: host_ip's network .15
    std::vector<HostForward> hostfwd;
    int tap_fd = -1;  // mode=tap,fd=N: an open tap lkvm was given; -1: none
    // mode=user: whether host_ip leads to the host's loopback (127.0.0.1) services; unset: the
    // command decides (on for `run`, as QEMU and kvmtool; off for `sandbox`).
    std::optional<bool> host_loopback;
    bool restricted = false;  // mode=user restrict=on: no outbound traffic at all
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

}  // namespace vmm
