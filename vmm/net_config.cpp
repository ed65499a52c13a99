#include "vmm/net_config.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>
#include <set>

#include "devices/net/slirp_backend.hpp"
#include "devices/net/tap_backend.hpp"

namespace vmm {
namespace {

std::vector<std::string_view> split(std::string_view text, char sep) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = text.find(sep, start);
        parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return parts;
        start = end + 1;
    }
}

bool parse_mac(std::string_view text, std::array<std::uint8_t, 6>& mac) {
    const auto parts = split(text, ':');
    if (parts.size() != 6) return false;
    for (std::size_t i = 0; i < 6; ++i) {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(parts[i].data(), parts[i].data() + parts[i].size(), value, 16);
        if (parts[i].size() != 2 || ec != std::errc() || end != parts[i].data() + parts[i].size()) return false;
        mac[i] = static_cast<std::uint8_t>(value);
    }
    return true;
}

bool parse_ip(std::string_view text, std::uint32_t& ip) {
    in_addr addr{};
    if (text.size() > 15 || ::inet_pton(AF_INET, std::string(text).c_str(), &addr) != 1) return false;
    ip = ntohl(addr.s_addr);
    return true;
}

bool parse_port(std::string_view text, std::uint16_t& port) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
        return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

// "[ADDR:]PORT" (also ":PORT"): an empty or missing address leaves `addr` as it is.
bool parse_endpoint(std::string_view text, std::uint32_t& addr, std::uint16_t& port) {
    const std::size_t colon = text.rfind(':');
    if (colon != std::string_view::npos && colon != 0 && !parse_ip(text.substr(0, colon), addr)) return false;
    return parse_port(colon == std::string_view::npos ? text : text.substr(colon + 1), port);
}

// QEMU's syntax: "tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT" or "udp:...", and the short
// "tcp:HOSTPORT-GUESTPORT".
bool parse_hostfwd(std::string_view text, HostForward& fwd) {
    const std::size_t colon = text.find(':');
    if (colon == std::string_view::npos) return false;
    const std::string_view proto = text.substr(0, colon);
    if (proto == "udp") fwd.udp = true;
    else if (proto != "tcp") return false;
    const std::string_view ends = text.substr(colon + 1);
    const std::size_t dash = ends.find('-');
    if (dash == std::string_view::npos) return false;
    return parse_endpoint(ends.substr(0, dash), fwd.host_addr, fwd.host_port) &&
           parse_endpoint(ends.substr(dash + 1), fwd.guest_addr, fwd.guest_port);
}

bool parse_switch(std::string_view text, bool& on) {
    if (text == "on" || text == "yes") on = true;
    else if (text == "off" || text == "no") on = false;
    else return false;
    return true;
}

}  // namespace

std::string parse_network(std::string_view spec, NetConfig& out) {
    const std::string all = "-n/--network " + std::string(spec);
    if (spec.empty()) return {};
    for (std::string_view item : split(spec, ',')) {
        const std::size_t eq = item.find('=');
        const std::string_view key = item.substr(0, eq);
        const std::string_view value = eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
        if (eq == std::string_view::npos || value.empty())
            return all + ": '" + std::string(item) + "' is not KEY=VALUE (e.g. mode=user, tapif=tap0)";
        if (key == "mode") {
            if (value == "user") out.mode = NetMode::User;
            else if (value == "tap") out.mode = NetMode::Tap;
            else if (value == "none") out.mode = NetMode::None;
            else return all + ": mode=" + std::string(value) + ": choose user, tap or none";
        } else if (key == "tapif" || key == "tap") {
            // IFNAMSIZ (16) including the NUL.
            if (value.size() > 15 || value.find('/') != std::string_view::npos)
                return all + ": tapif=" + std::string(value) + ": an interface name has at most 15 characters, no '/'";
            out.tapif = value;
        } else if (key == "guest_mac") {
            if (!parse_mac(value, out.mac))
                return all + ": guest_mac=" + std::string(value) + ": write six hex bytes, e.g. 52:54:00:12:34:56";
            if (out.mac[0] & 1)
                return all + ": guest_mac=" + std::string(value) +
                       " is a multicast address; the first byte must be even";
            if (out.mac == std::array<std::uint8_t, 6>{})
                return all + ": guest_mac=" + std::string(value) + ": the all-zero address is not a station address";
        } else if (key == "host_ip") {
            if (!parse_ip(value, out.host_ip))
                return all + ": host_ip=" + std::string(value) + " is not an IPv4 address (A.B.C.D)";
        } else if (key == "guest_ip") {
            if (!parse_ip(value, out.guest_ip))
                return all + ": guest_ip=" + std::string(value) + " is not an IPv4 address (A.B.C.D)";
        } else if (key == "hostfwd") {
            HostForward fwd;
            if (!parse_hostfwd(value, fwd))
                return all + ": hostfwd=" + std::string(value) +
                       ": write tcp:[ADDR:]HOSTPORT-[GUESTADDR:]GUESTPORT (or udp:...), ports 1-65535";
            out.hostfwd.push_back(fwd);
        } else if (key == "host_loopback" || key == "restrict") {
            bool on = false;
            if (!parse_switch(value, on))
                return all + ": " + std::string(key) + "=" + std::string(value) + ": write on or off";
            if (key == "restrict") out.restricted = on;
            else out.host_loopback = on;
        } else {
            return all + ": unknown parameter '" + std::string(key) +
                   "'; the parameters are mode, tapif, guest_mac, host_ip, guest_ip, hostfwd, host_loopback, restrict";
        }
    }
    if (out.mode != NetMode::User && !out.hostfwd.empty())
        return all + ": hostfwd= needs mode=user (a tap is reached directly)";
    if (out.mode != NetMode::User && (out.host_loopback || out.restricted))
        return all + ": host_loopback= and restrict= need mode=user (a tap is the host's own interface)";
    if (out.mode != NetMode::Tap && !out.tapif.empty()) return all + ": tapif= needs mode=tap";
    return {};
}

std::vector<std::string> check_networks(const std::vector<NetConfig>& nets) {
    std::vector<std::string> errors;
    std::set<std::array<std::uint8_t, 6>> macs;
    std::set<std::pair<bool, std::uint16_t>> ports;
    std::set<std::string> taps;
    unsigned index = 0;
    for (const NetConfig& net : nets) {
        if (net.mode == NetMode::None) continue;
        const auto mac = nic_mac(net, index++);
        if (!macs.insert(mac).second)
            errors.push_back("-n/--network guest_mac=" + format_mac(mac) + " is given to two NICs; give each its own");
        if (net.mode == NetMode::User) {
            const std::uint32_t guest = nic_guest_ip(net);
            if ((guest & 0xffffff00) != (net.host_ip & 0xffffff00) || guest == net.host_ip || (guest & 0xff) == 0 ||
                (guest & 0xff) == 0xff || (net.host_ip & 0xff) == 0 || (net.host_ip & 0xff) == 0xff)
                errors.push_back("-n/--network host_ip=" + format_ipv4(net.host_ip) +
                                 ",guest_ip=" + format_ipv4(guest) +
                                 ": user mode needs two different host addresses in one /24 network");
        }
        for (const HostForward& fwd : net.hostfwd) {
            const std::uint32_t guest = nic_guest_ip(net);
            if (fwd.guest_addr != 0 &&
                ((fwd.guest_addr & 0xffffff00) != (guest & 0xffffff00) || fwd.guest_addr == net.host_ip))
                errors.push_back("-n/--network hostfwd=...-" + format_ipv4(fwd.guest_addr) + ":" +
                                 std::to_string(fwd.guest_port) +
                                 ": the guest address must be in the guest's network " +
                                 format_ipv4(guest & 0xffffff00) + "/24 (and not host_ip)");
            if (!ports.insert({fwd.udp, fwd.host_port}).second)
                errors.push_back("-n/--network hostfwd=" + std::string(fwd.udp ? "udp:" : "tcp:") +
                                 std::to_string(fwd.host_port) + ": that host port is forwarded twice");
        }
        if (!net.tapif.empty() && !taps.insert(net.tapif).second)
            errors.push_back("-n/--network tapif=" + net.tapif + " is given twice; one NIC per tap");
    }
    return errors;
}

std::array<std::uint8_t, 6> nic_mac(const NetConfig& config, unsigned index) {
    if (config.mac != std::array<std::uint8_t, 6>{}) return config.mac;
    return {0x52, 0x54, 0x00, 0x12, 0x34, static_cast<std::uint8_t>(0x56 + index)};
}

std::uint32_t nic_guest_ip(const NetConfig& config) {
    return config.guest_ip != 0 ? config.guest_ip : (config.host_ip & 0xffffff00) | 15;
}

devices::net::SlirpOptions slirp_options(const NetConfig& config) {
    devices::net::SlirpOptions options;
    options.host_ip = config.host_ip;
    options.guest_ip = nic_guest_ip(config);
    for (const HostForward& fwd : config.hostfwd)
        options.hostfwd.push_back({.udp = fwd.udp,
                                   .host_addr = fwd.host_addr,
                                   .host_port = fwd.host_port,
                                   .guest_addr = fwd.guest_addr,
                                   .guest_port = fwd.guest_port});
    options.host_loopback = config.host_loopback.value_or(true);
    options.restricted = config.restricted;
    return options;
}

devices::net::TapOptions tap_options(const NetConfig& config) {
    return {.tapif = config.tapif, .host_ip = config.host_ip, .tap_fd = config.tap_fd};
}

std::string format_mac(const std::array<std::uint8_t, 6>& mac) {
    char text[18];
    std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return text;
}

}  // namespace vmm
