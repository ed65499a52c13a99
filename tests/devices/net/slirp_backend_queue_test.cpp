// devices::net::SlirpBackend against libslirp itself, through the NetBackend seam the device uses:
// a guest frame in (send), slirp's answer out (receive, receive_fd), the bounded queue of frames
// waiting for the guest, and a hostfwd= port that is taken. The guest's frames are ARP requests
// built by hand: slirp answers each at once, without a socket or a timer.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <string>

#include "devices/net/slirp_backend.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/unique_fd.hpp"

using devices::net::SlirpBackend;
using devices::net::SlirpOptions;

namespace {

constexpr std::uint32_t kGateway = 0x0a000202;  // 10.0.2.2
constexpr std::uint32_t kGuest = 0x0a00020f;    // 10.0.2.15
constexpr std::array<std::uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

void put32(std::uint8_t* at, std::uint32_t host_order) {
    const std::uint32_t be = htonl(host_order);
    std::memcpy(at, &be, 4);
}
std::uint32_t get32(const std::uint8_t* at) {
    std::uint32_t be;
    std::memcpy(&be, at, 4);
    return ntohl(be);
}

// Ethernet broadcast + ARP request (RFC 826): who has `target`? tell the guest.
std::array<std::uint8_t, 42> arp_request(std::uint32_t target) {
    std::array<std::uint8_t, 42> f{};
    std::memset(f.data(), 0xff, 6);
    std::memcpy(f.data() + 6, kGuestMac.data(), 6);
    f[12] = 0x08, f[13] = 0x06;  // ETH_P_ARP
    f[14] = 0x00, f[15] = 0x01;  // Ethernet
    f[16] = 0x08, f[17] = 0x00;  // IPv4
    f[18] = 6, f[19] = 4;        // address lengths
    f[20] = 0x00, f[21] = 0x01;  // request
    std::memcpy(f.data() + 22, kGuestMac.data(), 6);
    put32(f.data() + 28, kGuest);
    put32(f.data() + 38, target);
    return f;
}

bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST_CASE("SlirpBackend answers a guest's ARP for the gateway through receive()") {
    SlirpBackend backend(SlirpOptions{});
    CHECK(backend.kind() == "user");
    CHECK_FALSE(backend.has_vnet_header());
    CHECK_FALSE(readable(backend.receive_fd()));
    std::array<std::uint8_t, 2048> buffer{};
    CHECK(backend.receive(buffer) == 0);

    REQUIRE(backend.send(arp_request(kGateway)));
    backend.flush();
    CHECK(readable(backend.receive_fd()));
    const std::size_t length = backend.receive(buffer);
    REQUIRE(length >= 42);
    CHECK(std::memcmp(buffer.data(), kGuestMac.data(), 6) == 0);  // to the guest
    CHECK(buffer[12] == 0x08);
    CHECK(buffer[13] == 0x06);
    CHECK(buffer[21] == 0x02);  // reply
    CHECK(get32(buffer.data() + 28) == kGateway);
    CHECK(get32(buffer.data() + 38) == kGuest);
    CHECK_FALSE(readable(backend.receive_fd()));  // the queue is empty again
    CHECK(backend.receive(buffer) == 0);
}

TEST_CASE("SlirpBackend keeps at most kMaxQueuedFrames for the guest and counts the rest as dropped") {
    SlirpBackend backend(SlirpOptions{});
    for (std::size_t i = 0; i < SlirpBackend::kMaxQueuedFrames + 3; ++i) REQUIRE(backend.send(arp_request(kGateway)));
    backend.flush();
    CHECK(backend.dropped() == 3);
    CHECK(backend.describe().find("queued=" + std::to_string(SlirpBackend::kMaxQueuedFrames)) != std::string::npos);
    CHECK(backend.describe().find("dropped=3") != std::string::npos);
    std::array<std::uint8_t, 2048> buffer{};
    std::size_t delivered = 0;
    while (backend.receive(buffer) != 0) ++delivered;
    CHECK(delivered == SlirpBackend::kMaxQueuedFrames);
    CHECK_FALSE(readable(backend.receive_fd()));
}

TEST_CASE("SlirpBackend describes its network from its own options") {
    SlirpOptions options;
    options.host_ip = 0xc0a80701;   // 192.168.7.1
    options.guest_ip = 0xc0a80720;  // 192.168.7.32
    SlirpBackend backend(options);
    const std::string line = backend.describe();
    CHECK(line.find("guest=192.168.7.32/24") != std::string::npos);
    CHECK(line.find("gateway=192.168.7.1") != std::string::npos);
    CHECK(line.find("hostfwd=0") != std::string::npos);
}

TEST_CASE("SlirpBackend refuses a hostfwd= whose host port is taken, naming it") {
    // Hold a port on 127.0.0.1 (listening, so no other socket may bind it on any address).
    vmm::UniqueFd holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(holder.get() >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(holder.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(holder.get(), 1) == 0);
    socklen_t size = sizeof addr;
    REQUIRE(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&addr), &size) == 0);
    const std::uint16_t port = ntohs(addr.sin_port);

    SlirpOptions options;
    options.hostfwd.push_back({.udp = false, .host_port = port, .guest_port = 22});
    const std::string named = "hostfwd=tcp:127.0.0.1:" + std::to_string(port) + "-22";
    CHECK_THROWS_WITH_AS(SlirpBackend{options}, doctest::Contains(named.c_str()), vmm::SetupError);
}
