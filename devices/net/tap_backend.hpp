// mode=tap: frames go to a Linux tap device (Documentation/networking/tuntap.rst). tapif= names
// an existing tap (or, with CAP_NET_ADMIN, one lkvm creates, brings up and gives host_ip/24); no
// tapif as root: a new "lkvmtap%d". With IFF_VNET_HDR the virtio-net header passes through
// unchanged (TUNSETVNETHDRSZ 12), so the guest gets checksum and TSO offloads in both directions
// where the tap accepts TUNSETOFFLOAD.
#pragma once

#include <cstdint>
#include <string>

#include "virtio/net_backend.hpp"
#include "vmm/base/unique_fd.hpp"

namespace devices::net {

// One tap, as the backend needs it (vmm/net_config.cpp builds it from -n mode=tap).
struct TapOptions {
    std::string tapif;                   // an existing tap's name; empty: a new one (root)
    std::uint32_t host_ip = 0x0a000202;  // host order: given to a tap lkvm creates, as host_ip/24
};

class TapBackend final : public virtio::NetBackend {
public:
    // Throws vmm::SetupError naming tapif= and the reason (missing, busy, not a tap, no permission).
    explicit TapBackend(const TapOptions& options);

    std::string_view kind() const override { return "tap"; }
    std::string describe() const override;
    bool has_vnet_header() const override { return vnet_header_; }
    std::uint64_t offload_features() const override;
    bool set_offloads(std::uint64_t features) override;
    bool send(std::span<const std::uint8_t> frame) override;
    std::size_t receive(std::span<std::uint8_t> buffer) override;
    int receive_fd() const override { return fd_.get(); }

private:
    vmm::UniqueFd fd_;
    std::string ifname_;
    bool vnet_header_ = false;
    bool guest_offloads_ = false;  // TUNSETOFFLOAD works: the tap may hand us GSO / partial-checksum frames
    bool created_ = false;
};

}  // namespace devices::net
