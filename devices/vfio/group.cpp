#include "devices/vfio/group.hpp"

#include <fcntl.h>
#include <linux/vfio.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace devices::vfio {
namespace {

std::string basename_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string device_dir(const std::string& bdf) { return "/sys/bus/pci/devices/" + bdf; }

// "bound to nvme", "bound to no driver"
std::string driver_of(Host& host, const std::string& bdf) {
    auto link = host.read_link(device_dir(bdf) + "/driver");
    return link ? basename_of(*link) : std::string();
}

bool is_hex(std::string_view s, std::size_t digits) {
    return s.size() == digits &&
           std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::optional<std::string> normalize_bdf(std::string_view text) {
    std::string s(text);
    if (std::count(s.begin(), s.end(), ':') == 1) s = "0000:" + s;
    // dddd:bb:dd.f
    if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return std::nullopt;
    if (!is_hex(std::string_view(s).substr(0, 4), 4) || !is_hex(std::string_view(s).substr(5, 2), 2) ||
        !is_hex(std::string_view(s).substr(8, 2), 2) || s[11] < '0' || s[11] > '7')
        return std::nullopt;
    unsigned device = 0;
    std::sscanf(s.c_str() + 8, "%2x", &device);
    if (device > 31) return std::nullopt;
    std::transform(s.begin(), s.end(), s.begin(),
                   [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    return s;
}

unsigned group_of(Host& host, const std::string& bdf) {
    const std::string dir = device_dir(bdf);
    if (!host.read_text(dir + "/vendor"))
        throw vmm::SetupError("--vfio-pci " + bdf + ": no such PCI device (" + dir + " does not exist)");
    const std::string driver = driver_of(host, bdf);
    if (driver != "vfio-pci")
        throw vmm::SetupError("--vfio-pci " + bdf + ": " +
                              (driver.empty() ? "not bound to any driver" : "bound to " + driver) +
                              ", not vfio-pci (echo vfio-pci > " + dir + "/driver_override, unbind it, then echo " +
                              bdf + " > /sys/bus/pci/drivers_probe)");
    auto group = host.read_link(dir + "/iommu_group");
    if (!group)
        throw vmm::SetupError("--vfio-pci " + bdf + ": the device has no IOMMU group (is the host IOMMU enabled?)");
    const std::string number = basename_of(*group);
    if (number.empty() || number.size() > 9 ||
        !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; }))
        throw vmm::SetupError("--vfio-pci " + bdf + ": unexpected IOMMU group link '" + *group + "'");
    return static_cast<unsigned>(std::stoul(number));
}

std::vector<HostReservedRegion> parse_reserved_regions(std::string_view text) {
    std::vector<HostReservedRegion> regions;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        unsigned long long first = 0, last = 0;
        char type[32] = {};
        if (std::sscanf(line.c_str(), "%llx %llx %31s", &first, &last, type) == 3 && first <= last)
            regions.push_back({first, last, type});
    }
    return regions;
}

Group::Group(Host& host, unsigned number, std::shared_ptr<Container> container)
    : host_(host), number_(number), container_(std::move(container)) {
    const std::string path = "/dev/vfio/" + std::to_string(number);
    int fd = host_.open(path, O_RDWR);
    if (fd == -ENOENT) throw vmm::SetupError("VFIO group " + std::to_string(number) + ": " + path + " does not exist");
    if (fd == -EBUSY)
        throw vmm::SetupError("VFIO group " + std::to_string(number) + ": " + path + " is in use by another process");
    if (fd < 0) vmm::throw_errno("VFIO group " + std::to_string(number) + ": cannot open " + path, -fd);
    fd_ = HostFd(host_, fd);

    vfio_group_status status{};
    status.argsz = sizeof status;
    int r = host_.ioctl(fd, VFIO_GROUP_GET_STATUS, &status);
    if (r < 0) vmm::throw_errno("VFIO group " + std::to_string(number) + ": VFIO_GROUP_GET_STATUS", -r);
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        // Name every device that is bound to a driver other than vfio-pci: those block the group.
        const std::string dir = "/sys/kernel/iommu_groups/" + std::to_string(number) + "/devices";
        std::vector<std::string> members = host_.list_dir(dir);
        std::sort(members.begin(), members.end());
        std::string blockers;
        for (const std::string& member : members) {
            const std::string driver = driver_of(host_, member);
            if (driver.empty() || driver == "vfio-pci") continue;
            blockers += (blockers.empty() ? "" : ", ") + member + " (bound to " + driver + ")";
        }
        throw vmm::SetupError("VFIO group " + std::to_string(number) + " is not viable: " +
                              (blockers.empty() ? "a device in it is bound to a host driver" : blockers) +
                              "; bind every device of " + dir + " to vfio-pci or unbind it");
    }
    int container_fd = container_->fd();
    r = host_.ioctl(fd, VFIO_GROUP_SET_CONTAINER, &container_fd);
    if (r < 0) vmm::throw_errno("VFIO group " + std::to_string(number) + ": VFIO_GROUP_SET_CONTAINER", -r);
    attached_ = true;
    try {
        container_->enable_iommu();
    } catch (...) {
        host_.ioctl(fd, VFIO_GROUP_UNSET_CONTAINER, nullptr);
        attached_ = false;
        throw;
    }
}

Group::~Group() {
    // Every device fd of this group is closed by now (Device holds the Group and closes its fd
    // first), so the group can leave its container; the container then drops its mappings.
    if (attached_ && host_.ioctl(fd_.get(), VFIO_GROUP_UNSET_CONTAINER, nullptr) < 0)
        vmm::log_warn("VFIO group %u: VFIO_GROUP_UNSET_CONTAINER failed", number_);
}

std::vector<HostReservedRegion> Group::reserved_regions() const {
    auto text = host_.read_text("/sys/kernel/iommu_groups/" + std::to_string(number_) + "/reserved_regions");
    return text ? parse_reserved_regions(*text) : std::vector<HostReservedRegion>{};
}

int Group::open_device(const std::string& bdf) const {
    return host_.ioctl(fd_.get(), VFIO_GROUP_GET_DEVICE_FD, const_cast<char*>(bdf.c_str()));
}

}  // namespace devices::vfio
