// devices::pci::Function: a PCI function on lkvm's host bridge, and the guest-side address of
// one (bus/device/function, whose 16-bit form is the Requester ID). PCIe 4.0 2.2.6.2, 7.2.2.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace devices::pci {

// A guest BDF. RID = bus[15:8] device[7:3] function[2:0]; lkvm uses the RID unchanged as the
// virtio-iommu endpoint ID (iommu-map) and as the ITS DeviceID (msi-map), see host_bridge.hpp.
struct Bdf {
    std::uint8_t bus = 0;
    std::uint8_t device = 0;    // 0..31
    std::uint8_t function = 0;  // 0..7

    constexpr std::uint16_t rid() const {
        return static_cast<std::uint16_t>((bus << 8) | ((device & 0x1f) << 3) | (function & 7));
    }
    std::string to_string() const;  // "00:03.0"
    friend bool operator==(const Bdf&, const Bdf&) = default;
};

// Called from vCPU threads, possibly several at once: implementations guard their own state.
// The host bridge delivers only accesses that pass valid_config_access() (config_space.hpp).
class Function {
public:
    virtual ~Function() = default;
    virtual std::string_view name() const = 0;
    virtual void config_read(std::uint16_t offset, std::span<std::uint8_t> data) = 0;
    virtual void config_write(std::uint16_t offset, std::span<const std::uint8_t> data) = 0;
};

}  // namespace devices::pci
