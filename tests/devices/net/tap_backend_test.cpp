// devices::net::TapBackend's refusals, which name the flag and the fix without creating or
// changing any host interface: an existing interface that is not a tap (the loopback), and no
// tapif= without root. (Frames through a real tap need CAP_NET_ADMIN and are the rig's part:
// tests/rig/net.test.sh.)
#include <doctest/doctest.h>

#include <unistd.h>

#include <string>

#include "devices/net/tap_backend.hpp"
#include "vmm/base/error.hpp"

using devices::net::TapBackend;
using devices::net::TapOptions;

namespace {

// The message of the SetupError constructing a TapBackend with `options` throws ("" if none).
std::string refusal(const TapOptions& options) {
    try {
        TapBackend backend(options);
    } catch (const vmm::SetupError& e) {
        return e.what();
    }
    return "";
}

// Without /dev/net/tun (a container, no tun module) every refusal is that one; it names the fix.
bool no_tun(const std::string& message) {
    return message.find("cannot open /dev/net/tun") != std::string::npos &&
           message.find("modprobe tun") != std::string::npos;
}

}  // namespace

TEST_CASE("TapBackend refuses an existing interface that is not a tap, naming tapif=") {
    const std::string message = refusal({.tapif = "lo", .host_ip = 0x0a000202});
    INFO(message);
    CHECK(message.rfind("-n/--network mode=tap", 0) == 0);
    CHECK((no_tun(message) || message.find("tapif=lo: 'lo' exists and is not a tap device") != std::string::npos));
}

TEST_CASE("TapBackend without tapif= and without root says how to make a tap") {
    if (::geteuid() == 0) return;  // as root it would create one: a host change this test must not make
    const std::string message = refusal({});
    INFO(message);
    CHECK((no_tun(message) || (message.find("creating a tap needs root") != std::string::npos &&
                               message.find("pass tapif=") != std::string::npos)));
}
