#include "devices/vfio/container.hpp"

#include <fcntl.h>
#include <linux/vfio.h>

#include <cstring>
#include <vector>

#include "devices/vfio/info_caps.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace devices::vfio {
namespace {

constexpr const char* kContainerPath = "/dev/vfio/vfio";

}  // namespace

Container::Container(Host& host, std::string name) : host_(host), name_(std::move(name)) {
    int fd = host_.open(kContainerPath, O_RDWR);
    if (fd == -ENOENT)
        throw vmm::SetupError(std::string(kContainerPath) +
                              " does not exist: load the vfio and vfio-pci modules (modprobe vfio-pci)");
    if (fd < 0) vmm::throw_errno(std::string("cannot open ") + kContainerPath, -fd);
    fd_ = HostFd(host_, fd);
    int version = host_.ioctl_value(fd, VFIO_GET_API_VERSION, 0);
    if (version != VFIO_API_VERSION)
        throw vmm::SetupError(std::string(kContainerPath) + ": unsupported VFIO API version " +
                              std::to_string(version));
    if (host_.ioctl_value(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
        throw vmm::SetupError(
            std::string(kContainerPath) +
            ": the host offers no VFIO type-1 v2 IOMMU (load vfio_iommu_type1; IOMMUFD-only hosts are not supported)");
}

void Container::enable_iommu() {
    if (iommu_enabled_) return;
    int r = host_.ioctl_value(fd_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
    if (r < 0) vmm::throw_errno(name_ + ": VFIO_SET_IOMMU(TYPE1v2)", -r);
    iommu_enabled_ = true;
    read_info();
}

void Container::read_info() {
    // Ask once with the bare struct; the kernel raises argsz when capabilities do not fit.
    std::vector<std::uint8_t> buffer(sizeof(vfio_iommu_type1_info));
    for (int attempt = 0; attempt < 2; ++attempt) {
        vfio_iommu_type1_info info{};
        info.argsz = static_cast<std::uint32_t>(buffer.size());
        std::memcpy(buffer.data(), &info, sizeof info);
        int r = host_.ioctl(fd_.get(), VFIO_IOMMU_GET_INFO, buffer.data());
        if (r < 0) vmm::throw_errno(name_ + ": VFIO_IOMMU_GET_INFO", -r);
        std::memcpy(&info, buffer.data(), sizeof info);
        if (info.argsz > buffer.size() && attempt == 0 && info.argsz <= 65536) {
            buffer.resize(info.argsz);
            continue;
        }
        info_ = {};
        if (info.flags & VFIO_IOMMU_INFO_PGSIZES) info_.page_sizes = info.iova_pgsizes;
        if ((info.flags & VFIO_IOMMU_INFO_CAPS) && info.cap_offset != 0) {
            for_each_info_cap(
                buffer, info.cap_offset, [&](std::uint16_t id, std::uint16_t, std::span<const std::uint8_t> body) {
                    if (id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
                        vfio_iommu_type1_info_cap_iova_range ranges;
                        if (!read_cap(body, ranges)) return;
                        const std::size_t room = (body.size() - sizeof ranges) / sizeof(vfio_iova_range);
                        for (std::size_t i = 0; i < ranges.nr_iovas && i < room; ++i) {
                            vfio_iova_range range{};
                            std::memcpy(&range, body.data() + sizeof ranges + i * sizeof range, sizeof range);
                            if (range.start <= range.end) info_.iova_ranges.push_back({range.start, range.end});
                        }
                    } else if (id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
                        vfio_iommu_type1_info_dma_avail avail;
                        if (read_cap(body, avail)) info_.dma_avail = avail.avail;
                    }
                });
        }
        break;
    }
    if (info_.page_sizes == 0) info_.page_sizes = host_.page_size();
    // Hosts before Linux 5.4 report no ranges: assume the whole space (the host refuses maps
    // into its holes anyway, which then fail as S_INVAL).
    if (info_.iova_ranges.empty()) info_.iova_ranges.push_back({0, ~std::uint64_t{0}});
}

int Container::map_dma(std::uint64_t iova, std::uint64_t size, const void* host, bool device_reads,
                       bool device_writes) {
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof map;
    map.flags = (device_reads ? VFIO_DMA_MAP_FLAG_READ : 0u) | (device_writes ? VFIO_DMA_MAP_FLAG_WRITE : 0u);
    map.vaddr = reinterpret_cast<std::uint64_t>(host);
    map.iova = iova;
    map.size = size;
    int r = host_.ioctl(fd_.get(), VFIO_IOMMU_MAP_DMA, &map);
    return r < 0 ? r : 0;
}

int Container::unmap_dma(std::uint64_t iova, std::uint64_t size) {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof unmap;
    unmap.iova = iova;
    unmap.size = size;
    int r = host_.ioctl(fd_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap);
    return r < 0 ? r : 0;
}

int Container::unmap_all() {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof unmap;
    unmap.flags = VFIO_DMA_UNMAP_FLAG_ALL;
    int r = host_.ioctl(fd_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap);
    return r < 0 ? r : 0;
}

}  // namespace devices::vfio
