#include "devices/net/tap_backend.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "virtio/net_uapi.hpp"

#include <cerrno>
#include <cstring>

#include "virtio/features.hpp"
#include "vmm/base/error.hpp"

namespace devices::net {
namespace {

std::string tap_error(const std::string& name, int err) {
    const std::string what = "-n/--network mode=tap,tapif=" + name + ": ";
    switch (err) {
        case EBUSY: return what + "the tap is in use by another process (" + std::strerror(err) + ")";
        case EINVAL: return what + "'" + name + "' exists and is not a tap device";
        case EPERM:
        case EACCES:
            return what + "no permission (" + std::strerror(err) + "); create it first (ip tuntap add " + name +
                   " mode tap user $USER) or run as root";
        default: return what + "cannot attach: " + std::strerror(err);
    }
}

// Brings a tap lkvm created up with host_ip/24, as kvmtool does, so the guest can reach the host.
void configure_new_tap(const std::string& name, std::uint32_t host_ip) {
    vmm::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (sock.get() < 0) throw vmm::SetupError("-n/--network mode=tap: socket: " + std::string(std::strerror(errno)));
    auto request = [&](unsigned long op, std::uint32_t addr, const char* what) {
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
        auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(addr);
        if (::ioctl(sock.get(), op, &ifr) != 0)
            throw vmm::SetupError("-n/--network mode=tap,tapif=" + name + ": " + what + ": " + std::strerror(errno));
    };
    request(SIOCSIFADDR, host_ip, "setting host_ip");
    request(SIOCSIFNETMASK, 0xffffff00, "setting the netmask");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0 ||
        (ifr.ifr_flags |= IFF_UP, ::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0))
        throw vmm::SetupError("-n/--network mode=tap,tapif=" + name + ": bringing it up: " + std::strerror(errno));
}

}  // namespace

TapBackend::TapBackend(const TapOptions& options) {
    if (options.tap_fd >= 0) {
        adopt(options.tap_fd);
        return;
    }
    const std::string wanted = options.tapif.empty() ? "lkvmtap%d" : options.tapif;
    fd_.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (fd_.get() < 0)
        throw vmm::SetupError("-n/--network mode=tap: cannot open /dev/net/tun (" + std::string(std::strerror(errno)) +
                              "); load the tun module (modprobe tun)");
    const bool existed = !options.tapif.empty() && ::if_nametoindex(options.tapif.c_str()) != 0;
    if (options.tapif.empty() && ::geteuid() != 0)
        throw vmm::SetupError(
            "-n/--network mode=tap: no tapif= given, and creating a tap needs root; "
            "create one (ip tuntap add tap0 mode tap user $USER) and pass tapif=tap0");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, wanted.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd_.get(), TUNSETIFF, &ifr) == 0) {
        vnet_header_ = true;
    } else {
        // An old or restricted tap without vnet headers: plain frames, no offloads.
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (errno != EINVAL || ::ioctl(fd_.get(), TUNSETIFF, &ifr) != 0)
            throw vmm::SetupError(tap_error(wanted, errno));
    }
    ifname_ = ifr.ifr_name;
    created_ = !existed;
    if (vnet_header_) {
        int size = sizeof(virtio_net_hdr_v1);
        if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &size) != 0)
            throw vmm::SetupError("-n/--network tapif=" + ifname_ + ": TUNSETVNETHDRSZ: " + std::strerror(errno));
        // Whether the tap may hand us offloaded frames; off until the driver accepts them.
        guest_offloads_ = ::ioctl(fd_.get(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) == 0;
        ::ioctl(fd_.get(), TUNSETOFFLOAD, 0);
    }
    if (created_) configure_new_tap(ifname_, options.host_ip);
}

void TapBackend::adopt(int fd) {
    const std::string what = "-n/--network fd=" + std::to_string(fd) + ": ";
    ifreq ifr{};
    if (::fcntl(fd, F_GETFD) < 0) throw vmm::SetupError(what + "not an open file descriptor of lkvm");
    if (::ioctl(fd, TUNGETIFF, &ifr) != 0)
        throw vmm::SetupError(what + "not a tap device (TUNGETIFF: " + std::strerror(errno) + ")");
    if ((ifr.ifr_flags & IFF_TAP) == 0 || (ifr.ifr_flags & IFF_NO_PI) == 0)
        throw vmm::SetupError(what + "a tun device or one with packet information; open it with IFF_TAP | IFF_NO_PI");
    // lkvm's own copy, non-blocking and closed on exec; the caller's descriptor is left as it was.
    fd_.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (fd_.get() < 0) throw vmm::SetupError(what + "dup: " + std::strerror(errno));
    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) != 0)
        throw vmm::SetupError(what + "O_NONBLOCK: " + std::strerror(errno));
    ifname_ = ifr.ifr_name;
    vnet_header_ = (ifr.ifr_flags & IFF_VNET_HDR) != 0;
    if (vnet_header_) {
        int size = sizeof(virtio_net_hdr_v1);
        if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &size) != 0)
            throw vmm::SetupError(what + "TUNSETVNETHDRSZ: " + std::strerror(errno));
        guest_offloads_ = ::ioctl(fd_.get(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) == 0;
        ::ioctl(fd_.get(), TUNSETOFFLOAD, 0);
    }
}

std::string TapBackend::describe() const {
    return "tap " + ifname_ + (vnet_header_ ? " vnet_hdr" : "") + (guest_offloads_ ? " offloads" : "") +
           (created_ ? " created" : "");
}

std::uint64_t TapBackend::offload_features() const {
    using virtio::feature_bit;
    if (!vnet_header_) return 0;
    // The tap takes checksum-partial and GSO frames from us (it segments / completes them).
    std::uint64_t features = feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_HOST_TSO4) |
                             feature_bit(VIRTIO_NET_F_HOST_TSO6) | feature_bit(VIRTIO_NET_F_HOST_ECN);
    if (guest_offloads_)
        features |= feature_bit(VIRTIO_NET_F_GUEST_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_TSO4) |
                    feature_bit(VIRTIO_NET_F_GUEST_TSO6) | feature_bit(VIRTIO_NET_F_GUEST_ECN);
    return features;
}

bool TapBackend::set_offloads(std::uint64_t features) {
    using virtio::has_feature;
    if (!vnet_header_ || !guest_offloads_) return true;
    unsigned flags = 0;
    if (has_feature(features, VIRTIO_NET_F_GUEST_CSUM)) flags |= TUN_F_CSUM;
    if (has_feature(features, VIRTIO_NET_F_GUEST_TSO4)) flags |= TUN_F_TSO4;
    if (has_feature(features, VIRTIO_NET_F_GUEST_TSO6)) flags |= TUN_F_TSO6;
    if (has_feature(features, VIRTIO_NET_F_GUEST_ECN)) flags |= TUN_F_TSO_ECN;
    return ::ioctl(fd_.get(), TUNSETOFFLOAD, flags) == 0;
}

bool TapBackend::send(std::span<const std::uint8_t> frame) {
    // Non-blocking: a full tap queue (EAGAIN) drops the frame, as a congested link would.
    ssize_t n;
    do n = ::write(fd_.get(), frame.data(), frame.size());
    while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(frame.size());
}

std::size_t TapBackend::receive(std::span<std::uint8_t> buffer) {
    ssize_t n;
    do n = ::read(fd_.get(), buffer.data(), buffer.size());
    while (n < 0 && errno == EINTR);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
}

}  // namespace devices::net
