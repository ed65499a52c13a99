#include "vmm/net_config.hpp"

#include <doctest/doctest.h>

#include "devices/net/slirp_backend.hpp"
#include "devices/net/tap_backend.hpp"

namespace {

std::string error_of(const char* spec) {
    vmm::NetConfig net;
    return vmm::parse_network(spec, net);
}

vmm::NetConfig parsed(const char* spec) {
    vmm::NetConfig net;
    const std::string error = vmm::parse_network(spec, net);
    INFO(error);
    CHECK(error.empty());
    return net;
}

}  // namespace

TEST_CASE("-n takes kvmtool's parameter names") {
    auto n = parsed(
        "mode=user,guest_mac=02:15:15:15:15:15,host_ip=192.168.33.1,guest_ip=192.168.33.15,"
        "hostfwd=tcp:8080-80,hostfwd=udp::5353-:53");
    CHECK(n.mode == vmm::NetMode::User);
    CHECK(vmm::format_mac(n.mac) == "02:15:15:15:15:15");
    CHECK(vmm::format_ipv4(n.host_ip) == "192.168.33.1");
    CHECK(vmm::format_ipv4(vmm::nic_guest_ip(n)) == "192.168.33.15");
    REQUIRE(n.hostfwd.size() == 2);
    CHECK(n.hostfwd[0] == vmm::HostForward{.udp = false, .host_port = 8080, .guest_port = 80});
    CHECK(n.hostfwd[1] == vmm::HostForward{.udp = true, .host_port = 5353, .guest_port = 53});
    CHECK(parsed("mode=tap,tapif=tap0").tapif == "tap0");
}

TEST_CASE("-n hostfwd listens on 127.0.0.1 unless an address is given (QEMU's ADDR:PORT-GUESTADDR:PORT)") {
    auto n = parsed(
        "hostfwd=tcp:8022-22,hostfwd=tcp:0.0.0.0:8080-10.0.2.20:80,hostfwd=udp:192.168.1.5:5353-:53,"
        "hostfwd=tcp::2222-22");
    REQUIRE(n.hostfwd.size() == 4);
    CHECK(vmm::format_ipv4(n.hostfwd[0].host_addr) == "127.0.0.1");
    CHECK(n.hostfwd[0].guest_addr == 0);  // the NIC's guest_ip
    CHECK(vmm::format_ipv4(n.hostfwd[1].host_addr) == "0.0.0.0");
    CHECK(vmm::format_ipv4(n.hostfwd[1].guest_addr) == "10.0.2.20");
    CHECK(n.hostfwd[1].host_port == 8080);
    CHECK(vmm::format_ipv4(n.hostfwd[2].host_addr) == "192.168.1.5");
    CHECK(n.hostfwd[2].udp);
    CHECK(vmm::format_ipv4(n.hostfwd[3].host_addr) == "127.0.0.1");
    CHECK(n.hostfwd[3].host_port == 2222);
    CHECK(error_of("hostfwd=tcp:1.2.3:80-22").find("hostfwd") != std::string::npos);
    CHECK(vmm::check_networks({parsed("hostfwd=tcp:80-10.0.3.9:22")}).size() == 1);  // outside the guest's /24
}

TEST_CASE("-n host_loopback and restrict: unset, on or off, user mode only") {
    CHECK_FALSE(parsed("").host_loopback.has_value());  // the command decides
    CHECK(parsed("host_loopback=off").host_loopback == false);
    CHECK(parsed("host_loopback=on").host_loopback == true);
    CHECK_FALSE(parsed("").restricted);
    CHECK(parsed("restrict=on").restricted);
    CHECK(parsed("restrict=yes").restricted);
    CHECK(error_of("restrict=maybe").find("restrict=maybe") != std::string::npos);
    CHECK(error_of("mode=tap,host_loopback=off").find("need mode=user") != std::string::npos);
}

TEST_CASE("-n defaults: user mode, 10.0.2.2 / 10.0.2.15, MACs by index") {
    auto n = parsed("");
    CHECK(n.mode == vmm::NetMode::User);
    CHECK(vmm::format_ipv4(n.host_ip) == "10.0.2.2");
    CHECK(vmm::format_ipv4(vmm::nic_guest_ip(n)) == "10.0.2.15");
    CHECK(vmm::format_mac(vmm::nic_mac(n, 0)) == "52:54:00:12:34:56");
    CHECK(vmm::format_mac(vmm::nic_mac(n, 1)) == "52:54:00:12:34:57");
}

TEST_CASE("Bad -n values name the parameter") {
    CHECK(error_of("mode=bridge").find("mode=bridge") != std::string::npos);
    CHECK(error_of("guest_mac=52:54:00:12:34").find("guest_mac") != std::string::npos);
    CHECK(error_of("guest_mac=01:00:00:00:00:01").find("multicast") != std::string::npos);
    CHECK(error_of("guest_mac=00:00:00:00:00:00").find("guest_mac") != std::string::npos);
    CHECK(error_of("host_ip=10.0.2").find("host_ip") != std::string::npos);
    CHECK(error_of("guest_ip=300.0.0.1").find("guest_ip") != std::string::npos);
    CHECK(error_of("hostfwd=tcp:0-22").find("hostfwd") != std::string::npos);
    CHECK(error_of("hostfwd=tcp:70000-22").find("hostfwd") != std::string::npos);
    CHECK(error_of("hostfwd=sctp:1-2").find("hostfwd") != std::string::npos);
    CHECK(error_of("mode=tap,hostfwd=tcp:1-2").find("needs mode=user") != std::string::npos);
    CHECK(error_of("tapif=tap0").find("needs mode=tap") != std::string::npos);
    CHECK(error_of("mode=tap,tapif=a-very-long-tap-name").find("tapif") != std::string::npos);
    CHECK(error_of("speed=10").find("unknown parameter 'speed'") != std::string::npos);
    CHECK(error_of("mode").find("KEY=VALUE") != std::string::npos);
}

TEST_CASE("Across NICs: one MAC each, one forward per host port, addresses in one /24") {
    std::vector<vmm::NetConfig> nets{parsed("hostfwd=tcp:2222-22"), parsed("hostfwd=tcp:2222-22")};
    auto errors = vmm::check_networks(nets);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].find("forwarded twice") != std::string::npos);
    nets = {parsed("guest_mac=52:54:00:00:00:01"), parsed("guest_mac=52:54:00:00:00:01")};
    REQUIRE(vmm::check_networks(nets).size() == 1);
    nets = {parsed("host_ip=10.0.2.2,guest_ip=10.0.3.15")};
    REQUIRE(vmm::check_networks(nets).size() == 1);
    nets = {parsed(""), parsed(""), parsed("mode=none")};
    CHECK(vmm::check_networks(nets).empty());
}

TEST_CASE("The backends get their own options: the guest address resolved, the forwards copied") {
    const devices::net::SlirpOptions user =
        vmm::slirp_options(parsed("mode=user,host_ip=192.168.7.1,hostfwd=udp:5353-53"));
    CHECK(user.host_ip == 0xc0a80701);
    CHECK(user.guest_ip == 0xc0a8070f);  // host_ip's network .15
    REQUIRE(user.hostfwd.size() == 1);
    CHECK(user.hostfwd[0].udp);
    CHECK(user.hostfwd[0].host_port == 5353);
    CHECK(user.hostfwd[0].guest_port == 53);

    const devices::net::TapOptions tap = vmm::tap_options(parsed("mode=tap,tapif=tap7,host_ip=10.1.2.1"));
    CHECK(tap.tapif == "tap7");
    CHECK(tap.host_ip == 0x0a010201);
}
