// User-mode networking against libslirp itself: the host sockets a guest's flows may cost, what a
// hostfwd listener that cannot accept does to the loop, and the loopback / restrict options.
// Guest frames are built by hand (Ethernet + IPv4 + UDP/TCP), as a hostile guest would send them.
#include "devices/net/slirp_backend.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tests/support/descriptor_limit.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/net_config.hpp"

namespace {

constexpr std::uint32_t kGuest = 0x0a00020f;    // 10.0.2.15
constexpr std::uint32_t kGateway = 0x0a000202;  // 10.0.2.2: the host's loopback, unless disabled

std::size_t open_descriptors() {
    std::size_t count = 0;
    DIR* dir = ::opendir("/proc/self/fd");
    REQUIRE(dir != nullptr);
    while (const dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.') ++count;
    ::closedir(dir);
    return count - 1;  // the directory's own descriptor
}

void put16(std::vector<std::uint8_t>& f, std::size_t at, std::uint16_t v) {
    f[at] = static_cast<std::uint8_t>(v >> 8);
    f[at + 1] = static_cast<std::uint8_t>(v);
}
void put32(std::vector<std::uint8_t>& f, std::size_t at, std::uint32_t v) {
    put16(f, at, static_cast<std::uint16_t>(v >> 16));
    put16(f, at + 2, static_cast<std::uint16_t>(v));
}

// An Ethernet + IPv4 frame from the guest with `l4` as payload (IP header checksum filled in:
// slirp checks it).
std::vector<std::uint8_t> ipv4_frame(std::uint8_t protocol, std::uint32_t dst, const std::vector<std::uint8_t>& l4) {
    std::vector<std::uint8_t> f(14 + 20 + l4.size());
    const std::uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    std::memset(f.data(), 0xff, 6);
    std::memcpy(f.data() + 6, guest_mac, 6);
    put16(f, 12, 0x0800);
    f[14] = 0x45;
    put16(f, 16, static_cast<std::uint16_t>(20 + l4.size()));
    f[22] = 64;  // ttl
    f[23] = protocol;
    put32(f, 26, kGuest);
    put32(f, 30, dst);
    std::uint32_t sum = 0;
    for (std::size_t i = 14; i < 34; i += 2) sum += (std::uint32_t{f[i]} << 8) | f[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    put16(f, 24, static_cast<std::uint16_t>(~sum));
    std::copy(l4.begin(), l4.end(), f.begin() + 34);
    return f;
}

std::vector<std::uint8_t> udp_frame(std::uint16_t source_port, std::uint32_t dst, std::uint16_t dst_port) {
    std::vector<std::uint8_t> udp(8 + 4, 'x');
    put16(udp, 0, source_port);
    put16(udp, 2, dst_port);
    put16(udp, 4, static_cast<std::uint16_t>(udp.size()));
    put16(udp, 6, 0);  // no checksum (allowed over IPv4)
    return ipv4_frame(17, dst, udp);
}

std::vector<std::uint8_t> tcp_syn(std::uint16_t source_port, std::uint32_t dst, std::uint16_t dst_port) {
    std::vector<std::uint8_t> tcp(20, 0);
    put16(tcp, 0, source_port);
    put16(tcp, 2, dst_port);
    put32(tcp, 4, 1000);
    tcp[12] = 0x50;  // data offset 5 words
    tcp[13] = 0x02;  // SYN
    put16(tcp, 14, 65535);
    // TCP checksum over the pseudo header: slirp checks it.
    std::uint32_t sum = (kGuest >> 16) + (kGuest & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + 20;
    for (std::size_t i = 0; i < tcp.size(); i += 2) sum += (std::uint32_t{tcp[i]} << 8) | tcp[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    put16(tcp, 16, static_cast<std::uint16_t>(~sum));
    return ipv4_frame(6, dst, tcp);
}

// A TCP listener on 127.0.0.1 with a port the kernel picked.
struct LoopbackListener {
    vmm::UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
    std::uint16_t port = 0;
    LoopbackListener() {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd.get(), 8) == 0);
        socklen_t length = sizeof a;
        REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &length) == 0);
        port = ntohs(a.sin_port);
    }
};

// A free TCP port on 127.0.0.1 (the kernel's pick, released again).
std::uint16_t free_port() { return LoopbackListener().port; }

vmm::NetConfig forwarding(std::uint16_t host_port) {
    vmm::NetConfig config;
    config.hostfwd.push_back(vmm::HostForward{.udp = false, .host_port = host_port, .guest_port = 22});
    return config;
}

// A host client connected to 127.0.0.1:port: it waits in the listener's backlog until accepted.
vmm::UniqueFd connect_loopback(std::uint16_t port) {
    vmm::UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return client;
}

}  // namespace

TEST_CASE("slirp: a guest sending UDP from 100 source ports costs at most max_sockets host descriptors") {
    devices::net::SlirpBackend slirp(vmm::slirp_options(vmm::NetConfig{}), {.max_sockets = 8});
    const std::size_t before = open_descriptors();
    for (std::uint16_t i = 0; i < 100; ++i) slirp.send(udp_frame(static_cast<std::uint16_t>(20000 + i), kGateway, 9));
    slirp.flush();
    // Before the cap: one socket per source port, 100 descriptors (2,000 exhausted the limit).
    CHECK(open_descriptors() - before <= 8);
    CHECK(slirp.sockets() <= 8);
    CHECK(slirp.refused_flows() == 92);
    CHECK(slirp.describe().find("sockets=8/8") != std::string::npos);
}

TEST_CASE("slirp: TCP SYNs count against the cap too, and so does UDP at the cap") {
    devices::net::SlirpBackend slirp(vmm::slirp_options(vmm::NetConfig{}), {.max_sockets = 4});
    LoopbackListener service;
    for (std::uint16_t i = 0; i < 10; ++i)
        slirp.send(tcp_syn(static_cast<std::uint16_t>(30000 + i), kGateway, service.port));
    slirp.flush();
    CHECK(slirp.sockets() == 4);
    CHECK(slirp.refused_flows() == 6);
    // A UDP flow at the cap is refused as well.
    CHECK_FALSE(slirp.send(udp_frame(40000, kGateway, 9)));
    CHECK(slirp.refused_flows() == 7);
}

TEST_CASE("slirp: a hostfwd listener that cannot accept (no descriptor left) is paused, not retried every round") {
    const std::uint16_t port = free_port();
    devices::net::SlirpBackend slirp(vmm::slirp_options(forwarding(port)),
                                     {.max_sockets = 64, .listener_backoff = std::chrono::hours(1)});
    REQUIRE(slirp.sockets() == 1);  // the listener
    const vmm::UniqueFd client = connect_loopback(port);

    // No descriptor left: accept() would fail with EMFILE, and slirp would leave the listener
    // readable and try again on every round of the event loop.
    support::DescriptorLimitReached full;
    for (int round = 0; round < 50; ++round) slirp.service();
    full.release();
    CHECK(slirp.listener_pauses() == 1);  // once, then left alone for the backoff
    CHECK(slirp.sockets() == 1);          // nothing accepted
}

TEST_CASE("slirp: at the socket cap a hostfwd connection waits in the backlog and the listener pauses") {
    const std::uint16_t port = free_port();
    devices::net::SlirpBackend slirp(vmm::slirp_options(forwarding(port)),
                                     {.max_sockets = 1, .listener_backoff = std::chrono::hours(1)});
    const vmm::UniqueFd client = connect_loopback(port);
    for (int round = 0; round < 50; ++round) slirp.service();
    CHECK(slirp.listener_pauses() == 1);
    CHECK(slirp.sockets() == 1);
}

TEST_CASE("slirp: hostfwd listens on 127.0.0.1 by default, on the address given otherwise") {
    const std::uint16_t port = free_port();
    devices::net::SlirpBackend slirp(vmm::slirp_options(forwarding(port)));
    // The port is taken on 127.0.0.1 only: another address of the host can still bind it.
    vmm::UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(0x7f000002);  // 127.0.0.2, another loopback address
    CHECK(::bind(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    // Before: bound to 0.0.0.0, which takes the port on every address.
    vmm::NetConfig busy;
    busy.hostfwd.push_back(vmm::HostForward{.udp = false, .host_addr = 0, .host_port = port, .guest_port = 22});
    CHECK_THROWS(devices::net::SlirpBackend(vmm::slirp_options(busy)));
}

TEST_CASE(
    "slirp: host_loopback=off and restrict=on keep a guest's connection to the gateway from the host's loopback") {
    LoopbackListener service;
    auto sockets_after_syn = [&](vmm::NetConfig config) {
        devices::net::SlirpBackend slirp(vmm::slirp_options(config));
        const std::size_t before = slirp.sockets();
        slirp.send(tcp_syn(31000, kGateway, service.port));
        slirp.flush();
        return slirp.sockets() - before;
    };
    vmm::NetConfig open;
    CHECK(sockets_after_syn(open) == 1);  // slirp connects to 127.0.0.1:port for the guest
    vmm::NetConfig no_loopback;
    no_loopback.host_loopback = false;
    CHECK(sockets_after_syn(no_loopback) == 0);
    vmm::NetConfig restricted;
    restricted.restricted = true;
    CHECK(sockets_after_syn(restricted) == 0);
}
