// devices::vfio::Group: one host IOMMU group (/dev/vfio/N), the unit VFIO isolates: checked for
// viability, attached to a Container for its lifetime (Documentation/driver-api/vfio.rst: a group
// with an open device cannot leave its container, VFIO_GROUP_UNSET_CONTAINER -> EBUSY). Also the
// sysfs look-ups that turn a user's BDF into a group, with one clear line for every way that can
// fail.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devices/vfio/container.hpp"
#include "devices/vfio/host.hpp"

namespace devices::vfio {

// "0000:00:03.0" for "0000:00:03.0" or "00:03.0" (kvmtool accepts both), or nothing.
std::optional<std::string> normalize_bdf(std::string_view text);

// The IOMMU group of host device `bdf` (normalized). Throws vmm::SetupError naming the device
// when it does not exist, is not bound to vfio-pci, or has no IOMMU group.
unsigned group_of(Host& host, const std::string& bdf);

// A line of /sys/kernel/iommu_groups/N/reserved_regions: "0x... 0x... msi".
struct HostReservedRegion {
    std::uint64_t first = 0;
    std::uint64_t last = 0;  // inclusive
    std::string type;        // direct, direct-relaxable, reserved, msi
};
std::vector<HostReservedRegion> parse_reserved_regions(std::string_view text);

class Group {
public:
    // Opens /dev/vfio/<number>, checks viability (the error lists every device of the group that
    // blocks it, with its driver) and joins `container`, enabling its IOMMU if it is the first.
    // Throws vmm::SetupError; nothing stays open then.
    Group(Host& host, unsigned number, std::shared_ptr<Container> container);
    ~Group();
    Group(const Group&) = delete;
    Group& operator=(const Group&) = delete;

    int fd() const { return fd_.get(); }
    Host& host() const { return host_; }
    const std::shared_ptr<Container>& container() const { return container_; }
    std::vector<HostReservedRegion> reserved_regions() const;
    // VFIO_GROUP_GET_DEVICE_FD; -errno on failure.
    int open_device(const std::string& bdf) const;

private:
    Host& host_;
    unsigned number_;
    std::shared_ptr<Container> container_;  // declared first: outlives the group fd
    HostFd fd_;
    bool attached_ = false;
};

}  // namespace devices::vfio
