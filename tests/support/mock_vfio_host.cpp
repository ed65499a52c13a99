#include "tests/support/mock_vfio_host.hpp"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace devices::vfio::testing {
namespace {

constexpr unsigned kOffsetShift = 40;  // VFIO_PCI_OFFSET_SHIFT: region i at i << 40
constexpr std::uint64_t kOffsetMask = (std::uint64_t{1} << kOffsetShift) - 1;

void put16(std::array<std::uint8_t, 4096>& c, std::size_t at, std::uint16_t v) {
    c[at] = static_cast<std::uint8_t>(v);
    c[at + 1] = static_cast<std::uint8_t>(v >> 8);
}
void put32(std::array<std::uint8_t, 4096>& c, std::size_t at, std::uint32_t v) {
    put16(c, at, static_cast<std::uint16_t>(v));
    put16(c, at + 2, static_cast<std::uint16_t>(v >> 16));
}

}  // namespace

MockVfioHost::MockVfioHost() = default;

MockVfioHost::~MockVfioHost() {
    for (auto& [fd, info] : fds_) ::close(fd);
    for (auto& [bdf, memfds] : bar_memfds_)
        for (int fd : memfds)
            if (fd >= 0) ::close(fd);
    for (auto& [address, size] : mappings_) ::munmap(address, size);
}

MockDevice& MockVfioHost::add_device(const std::string& bdf, unsigned group) {
    MockDevice& d = devices_[bdf];
    d.bdf = bdf;
    d.group = group;
    members_[group].push_back({bdf, "vfio-pci"});
    if (!viable_.count(group)) viable_[group] = true;
    return d;
}

void MockVfioHost::make_nvme_like(MockDevice& d, std::uint64_t bar0_size, unsigned vectors, unsigned msix_bar,
                                  std::uint64_t table_offset, std::uint64_t pba_offset) {
    auto& c = d.config;
    c.fill(0);
    put16(c, PCI_VENDOR_ID, 0x1b36);
    put16(c, PCI_DEVICE_ID, 0x0010);
    put16(c, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE);
    put16(c, PCI_STATUS, PCI_STATUS_CAP_LIST | 0x8 /* interrupt status: dropped */);
    put32(c, PCI_CLASS_REVISION, 0x01080202);
    c[PCI_HEADER_TYPE] = 0x80;  // multi-function bit: lkvm clears it
    put32(c, PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_MEM_TYPE_64);
    put16(c, PCI_SUBSYSTEM_VENDOR_ID, 0x1af4);
    put16(c, PCI_SUBSYSTEM_ID, 0x1100);
    c[PCI_INTERRUPT_PIN] = 1;
    d.bars[0].size = bar0_size;
    if (msix_bar != 0) {
        put32(c, PCI_BASE_ADDRESS_0 + 4 * msix_bar, PCI_BASE_ADDRESS_MEM_TYPE_64);
        d.bars[msix_bar].size = 0x1000;
        while (d.bars[msix_bar].size < pba_offset + 8) d.bars[msix_bar].size *= 2;
    }
    // Capabilities: MSI-X at 0x40 -> MSI at 0x50 -> PCIe at 0x60 -> vendor at 0x9c.
    c[PCI_CAPABILITY_LIST] = 0x40;
    c[0x40] = PCI_CAP_ID_MSIX;
    c[0x41] = 0x50;
    put16(c, 0x42, static_cast<std::uint16_t>(vectors - 1));
    put32(c, 0x44, static_cast<std::uint32_t>(table_offset) | msix_bar);
    put32(c, 0x48, static_cast<std::uint32_t>(pba_offset) | msix_bar);
    c[0x50] = PCI_CAP_ID_MSI;
    c[0x51] = 0x60;
    c[0x60] = PCI_CAP_ID_EXP;
    c[0x61] = 0x9c;
    put16(c, 0x62, 0x0002);      // version 2, endpoint
    put32(c, 0x64, 0x12345678);  // device capabilities: passed through
    c[0x9c] = PCI_CAP_ID_VNDR;
    c[0x9d] = 0;
    d.msix_vectors = vectors;
}

void MockVfioHost::add_group_member(unsigned group, const std::string& bdf, const std::string& driver) {
    members_[group].push_back({bdf, driver});
    if (driver != "vfio-pci" && !driver.empty()) viable_[group] = false;
}

int MockVfioHost::new_fd(Fd info) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    fds_[fd] = std::move(info);
    return fd;
}

bool MockVfioHost::consume(std::optional<Failure>& failure, int& err) {
    if (!failure) return false;
    if (failure->successes > 0) {
        --failure->successes;
        return false;
    }
    err = failure->err;
    failure.reset();
    return true;
}

std::map<int, std::vector<MockDma>> MockVfioHost::dma() const {
    std::map<int, std::vector<MockDma>> out;
    for (const auto& [fd, info] : fds_)
        if (info.kind == Kind::Container) out[fd] = info.dma;
    return out;
}

std::size_t MockVfioHost::dma_entries() const {
    std::size_t n = 0;
    for (const auto& [fd, list] : dma()) n += list.size();
    return n;
}

std::uint64_t MockVfioHost::dma_bytes() const {
    std::uint64_t n = 0;
    for (const auto& [fd, list] : dma())
        for (const MockDma& m : list) n += m.size;
    return n;
}

std::size_t MockVfioHost::containers_open() const {
    return static_cast<std::size_t>(
        std::count_if(fds_.begin(), fds_.end(), [](const auto& f) { return f.second.kind == Kind::Container; }));
}

int MockVfioHost::region_fd(const std::string& bdf, unsigned bar) {
    auto [it, inserted] = bar_memfds_.try_emplace(bdf);
    if (inserted) it->second.fill(-1);
    int& fd = it->second[bar];
    if (fd < 0) {
        fd = ::memfd_create("mock-bar", MFD_CLOEXEC);
        if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(devices_.at(bdf).bars[bar].size)) != 0) return -1;
    }
    return fd;
}

std::vector<std::uint8_t> MockVfioHost::bar_bytes(const std::string& bdf, unsigned bar, std::uint64_t offset,
                                                  std::size_t size) {
    std::vector<std::uint8_t> out(size);
    if (::pread(region_fd(bdf, bar), out.data(), size, static_cast<off_t>(offset)) != static_cast<ssize_t>(size))
        out.clear();
    return out;
}

void MockVfioHost::set_bar_bytes(const std::string& bdf, unsigned bar, std::uint64_t offset,
                                 const std::vector<std::uint8_t>& bytes) {
    if (::pwrite(region_fd(bdf, bar), bytes.data(), bytes.size(), static_cast<off_t>(offset)) < 0) return;
}

// ---- Host: files ---------------------------------------------------------------------------------

int MockVfioHost::open(const std::string& path, int) {
    if (path == "/dev/vfio/vfio") return container_missing_ ? -ENOENT : new_fd(Fd{});
    if (path.rfind("/dev/vfio/", 0) == 0) {
        const unsigned group = static_cast<unsigned>(std::stoul(path.substr(10)));
        if (!members_.count(group)) return -ENOENT;
        for (const auto& [fd, info] : fds_)
            if (info.kind == Kind::Group && info.group == group) return -EBUSY;  // one opener per group
        Fd info;
        info.kind = Kind::Group;
        info.group = group;
        return new_fd(std::move(info));
    }
    return -ENOENT;
}

void MockVfioHost::close(int fd) {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return;
    switch (it->second.kind) {
        case Kind::Container: close_log_.push_back("container"); break;
        case Kind::Group: close_log_.push_back("group " + std::to_string(it->second.group)); break;
        case Kind::Device: close_log_.push_back("device " + it->second.bdf); break;
    }
    // Like the kernel: a container whose last group is gone (or that closes) drops its mappings.
    fds_.erase(it);
    ::close(fd);
}

ssize_t MockVfioHost::pread(int fd, void* buffer, std::size_t size, off_t offset) {
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.kind != Kind::Device) return -EBADF;
    MockDevice& d = devices_.at(it->second.bdf);
    const auto index = static_cast<unsigned>(static_cast<std::uint64_t>(offset) >> kOffsetShift);
    const std::uint64_t at = static_cast<std::uint64_t>(offset) & kOffsetMask;
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        if (at + size > d.config.size()) return -EINVAL;
        std::memcpy(buffer, d.config.data() + at, size);
        return static_cast<ssize_t>(size);
    }
    if (index >= 6 || at + size > d.bars[index].size) return -EINVAL;
    return ::pread(region_fd(d.bdf, index), buffer, size, static_cast<off_t>(at));
}

ssize_t MockVfioHost::pwrite(int fd, const void* buffer, std::size_t size, off_t offset) {
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.kind != Kind::Device) return -EBADF;
    MockDevice& d = devices_.at(it->second.bdf);
    const auto index = static_cast<unsigned>(static_cast<std::uint64_t>(offset) >> kOffsetShift);
    const std::uint64_t at = static_cast<std::uint64_t>(offset) & kOffsetMask;
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        if (at + size > d.config.size()) return -EINVAL;
        std::memcpy(d.config.data() + at, buffer, size);
        d.config_writes.push_back({at, size});
        return static_cast<ssize_t>(size);
    }
    if (index >= 6 || at + size > d.bars[index].size) return -EINVAL;
    return ::pwrite(region_fd(d.bdf, index), buffer, size, static_cast<off_t>(at));
}

void* MockVfioHost::mmap(std::size_t size, int prot, int fd, off_t offset) {
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.kind != Kind::Device) return nullptr;
    MockDevice& d = devices_.at(it->second.bdf);
    const auto index = static_cast<unsigned>(static_cast<std::uint64_t>(offset) >> kOffsetShift);
    const std::uint64_t at = static_cast<std::uint64_t>(offset) & kOffsetMask;
    if (index >= 6 || !d.bars[index].mmap || at % page_size_ != 0 || at + size > d.bars[index].size) return nullptr;
    void* p = ::mmap(nullptr, size, prot, MAP_SHARED, region_fd(d.bdf, index), static_cast<off_t>(at));
    if (p == MAP_FAILED) return nullptr;
    mappings_[p] = size;
    return p;
}

void MockVfioHost::munmap(void* address, std::size_t size) {
    mappings_.erase(address);
    ::munmap(address, size);
}

std::optional<std::string> MockVfioHost::read_text(const std::string& path) {
    const std::string devices = "/sys/bus/pci/devices/";
    if (path.rfind(devices, 0) == 0) {
        const std::string rest = path.substr(devices.size());
        const std::string bdf = rest.substr(0, rest.find('/'));
        for (const auto& [group, list] : members_)
            for (const auto& [member, driver] : list)
                if (member == bdf && rest == bdf + "/vendor") return "0x1b36\n";
        return std::nullopt;
    }
    const std::string groups = "/sys/kernel/iommu_groups/";
    if (path.rfind(groups, 0) == 0 && path.size() > 17 && path.substr(path.size() - 17) == "/reserved_regions") {
        const unsigned group = static_cast<unsigned>(std::stoul(path.substr(groups.size())));
        auto it = reserved_text_.find(group);
        if (it != reserved_text_.end()) return it->second;
        return std::string("0x0000000008000000 0x00000000080fffff msi\n");
    }
    if (path == "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit") return std::to_string(dma_limit_) + "\n";
    return std::nullopt;
}

std::optional<std::string> MockVfioHost::read_link(const std::string& path) {
    const std::string devices = "/sys/bus/pci/devices/";
    if (path.rfind(devices, 0) != 0) return std::nullopt;
    const std::string rest = path.substr(devices.size());
    const std::string bdf = rest.substr(0, rest.find('/'));
    for (const auto& [group, list] : members_) {
        for (const auto& [member, driver] : list) {
            if (member != bdf) continue;
            if (rest == bdf + "/driver") {
                if (driver.empty()) return std::nullopt;
                return "../../../bus/pci/drivers/" + driver;
            }
            if (rest == bdf + "/iommu_group") return "../../../kernel/iommu_groups/" + std::to_string(group);
        }
    }
    return std::nullopt;
}

std::vector<std::string> MockVfioHost::list_dir(const std::string& path) {
    std::vector<std::string> out;
    const std::string groups = "/sys/kernel/iommu_groups/";
    if (path.rfind(groups, 0) != 0) return out;
    const unsigned group = static_cast<unsigned>(std::stoul(path.substr(groups.size())));
    auto it = members_.find(group);
    if (it != members_.end())
        for (const auto& [bdf, driver] : it->second) out.push_back(bdf);
    return out;
}

// ---- Host: ioctls --------------------------------------------------------------------------------

int MockVfioHost::ioctl_value(int fd, unsigned long request, unsigned long arg) {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return -EBADF;
    Fd& c = it->second;
    if (c.kind != Kind::Container) return -ENOTTY;
    switch (request) {
        case VFIO_GET_API_VERSION: return VFIO_API_VERSION;
        case VFIO_CHECK_EXTENSION: return arg == VFIO_TYPE1v2_IOMMU || arg == VFIO_TYPE1_IOMMU ? 1 : 0;
        case VFIO_SET_IOMMU: {
            if (arg != VFIO_TYPE1v2_IOMMU) return -EINVAL;
            const bool has_group = std::any_of(fds_.begin(), fds_.end(), [&](const auto& f) {
                return f.second.kind == Kind::Group && f.second.container == fd;
            });
            if (!has_group) return -EINVAL;
            c.iommu_set = true;
            return 0;
        }
        default: return -ENOTTY;
    }
}

int MockVfioHost::ioctl(int fd, unsigned long request, void* arg) {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return -EBADF;
    switch (it->second.kind) {
        case Kind::Container: return container_ioctl(it->second, request, arg);
        case Kind::Group: return group_ioctl(fd, it->second, request, arg);
        case Kind::Device: return device_ioctl(it->second, request, arg);
    }
    return -ENOTTY;
}

int MockVfioHost::container_ioctl(Fd& c, unsigned long request, void* arg) {
    if (!c.iommu_set) return -EINVAL;
    switch (request) {
        case VFIO_IOMMU_GET_INFO: {
            auto* info = static_cast<vfio_iommu_type1_info*>(arg);
            const std::size_t ranges_at = sizeof(vfio_iommu_type1_info);
            const std::size_t ranges_size =
                sizeof(vfio_iommu_type1_info_cap_iova_range) + iova_ranges_.size() * sizeof(vfio_iova_range);
            const std::size_t avail_at = (ranges_at + ranges_size + 7) & ~std::size_t{7};
            const std::size_t needed = avail_at + sizeof(vfio_iommu_type1_info_dma_avail);
            const std::size_t given = info->argsz;
            info->flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
            info->iova_pgsizes = page_sizes_;
            info->cap_offset = 0;
            if (given < needed) {
                info->argsz = static_cast<std::uint32_t>(needed);
                return 0;
            }
            auto* base = static_cast<std::uint8_t*>(arg);
            vfio_iommu_type1_info_cap_iova_range ranges{};
            ranges.header.id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
            ranges.header.version = 1;
            ranges.header.next = report_dma_avail_ ? static_cast<std::uint32_t>(avail_at) : 0;
            ranges.nr_iovas = static_cast<std::uint32_t>(iova_ranges_.size());
            std::memcpy(base + ranges_at, &ranges, sizeof ranges);
            for (std::size_t i = 0; i < iova_ranges_.size(); ++i) {
                vfio_iova_range r{iova_ranges_[i].first, iova_ranges_[i].last};
                std::memcpy(base + ranges_at + sizeof ranges + i * sizeof r, &r, sizeof r);
            }
            if (report_dma_avail_) {
                vfio_iommu_type1_info_dma_avail avail{};
                avail.header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;
                avail.header.version = 1;
                avail.avail = dma_limit_ - static_cast<std::uint32_t>(c.dma.size());
                std::memcpy(base + avail_at, &avail, sizeof avail);
            }
            info->cap_offset = static_cast<std::uint32_t>(ranges_at);
            return 0;
        }
        case VFIO_IOMMU_MAP_DMA: {
            ++map_calls_;
            auto* map = static_cast<vfio_iommu_type1_dma_map*>(arg);
            const std::uint64_t align = std::uint64_t{1} << __builtin_ctzll(page_sizes_);
            if (!(map->flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE))) return -EINVAL;
            if (map->size == 0 || (map->iova | map->size | map->vaddr) & (align - 1)) return -EINVAL;
            if (map->iova + map->size - 1 < map->iova) return -EINVAL;
            const std::uint64_t last = map->iova + map->size - 1;
            const bool usable = std::any_of(iova_ranges_.begin(), iova_ranges_.end(),
                                            [&](const IovaRange& r) { return map->iova >= r.first && last <= r.last; });
            if (!usable) return -EINVAL;
            for (const MockDma& m : c.dma)
                if (map->iova <= m.iova + m.size - 1 && m.iova <= last) return -EEXIST;
            int err = 0;
            if (consume(map_failure_, err)) return -err;
            if (c.dma.size() >= dma_limit_) return -ENOSPC;
            c.dma.push_back({map->iova, map->size, reinterpret_cast<const void*>(map->vaddr), map->flags});
            return 0;
        }
        case VFIO_IOMMU_UNMAP_DMA: {
            ++unmap_calls_;
            auto* unmap = static_cast<vfio_iommu_type1_dma_unmap*>(arg);
            int err = 0;
            if (consume(unmap_failure_, err)) return -err;
            if (unmap->flags & VFIO_DMA_UNMAP_FLAG_ALL) {
                if (unmap->iova || unmap->size) return -EINVAL;
                std::uint64_t total = 0;
                for (const MockDma& m : c.dma) total += m.size;
                c.dma.clear();
                unmap->size = total;
                return 0;
            }
            if (unmap->size == 0) return -EINVAL;
            const std::uint64_t last = unmap->iova + unmap->size - 1;
            // Type-1 v2: the range may not bisect a mapping.
            for (const MockDma& m : c.dma) {
                const std::uint64_t m_last = m.iova + m.size - 1;
                const bool overlaps = m.iova <= last && unmap->iova <= m_last;
                if (overlaps && (m.iova < unmap->iova || m_last > last)) return -EINVAL;
            }
            std::uint64_t removed = 0;
            std::erase_if(c.dma, [&](const MockDma& m) {
                const bool inside = m.iova >= unmap->iova && m.iova + m.size - 1 <= last;
                if (inside) removed += m.size;
                return inside;
            });
            unmap->size = removed;
            return 0;
        }
        default: return -ENOTTY;
    }
}

int MockVfioHost::group_ioctl(int fd, Fd& g, unsigned long request, void* arg) {
    switch (request) {
        case VFIO_GROUP_GET_STATUS: {
            auto* status = static_cast<vfio_group_status*>(arg);
            status->flags = (viable_[g.group] ? VFIO_GROUP_FLAGS_VIABLE : 0u) |
                            (g.container >= 0 ? VFIO_GROUP_FLAGS_CONTAINER_SET : 0u);
            return 0;
        }
        case VFIO_GROUP_SET_CONTAINER: {
            if (!viable_[g.group]) return -EPERM;
            if (g.container >= 0) return -EINVAL;
            const int container = *static_cast<int*>(arg);
            auto c = fds_.find(container);
            if (c == fds_.end() || c->second.kind != Kind::Container) return -EBADF;
            g.container = container;
            return 0;
        }
        case VFIO_GROUP_UNSET_CONTAINER: {
            if (g.container < 0) return -EINVAL;
            for (const auto& [other, info] : fds_)
                if (info.kind == Kind::Device && devices_.at(info.bdf).group == g.group) return -EBUSY;
            const int container = g.container;
            g.container = -1;
            const bool last = std::none_of(fds_.begin(), fds_.end(), [&](const auto& f) {
                return f.second.kind == Kind::Group && f.second.container == container;
            });
            if (last && fds_.count(container)) {
                fds_.at(container).dma.clear();  // type1 drops everything with its last group
                fds_.at(container).iommu_set = false;
            }
            return 0;
        }
        case VFIO_GROUP_GET_DEVICE_FD: {
            if (g.container < 0 || !fds_.at(g.container).iommu_set) return -EINVAL;
            const std::string bdf(static_cast<const char*>(arg));
            auto d = devices_.find(bdf);
            if (d == devices_.end() || d->second.group != g.group) return -ENODEV;
            Fd info;
            info.kind = Kind::Device;
            info.bdf = bdf;
            (void)fd;
            return new_fd(std::move(info));
        }
        default: return -ENOTTY;
    }
}

int MockVfioHost::region_info(MockDevice& d, void* arg) {
    auto* info = static_cast<vfio_region_info*>(arg);
    const std::uint32_t index = info->index;
    const std::size_t given = info->argsz;
    info->flags = 0;
    info->cap_offset = 0;
    info->size = 0;
    info->offset = std::uint64_t{index} << kOffsetShift;
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        info->size = d.config.size();
        info->flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        return 0;
    }
    if (index >= 6 || d.bars[index].size == 0) return 0;
    const MockBar& bar = d.bars[index];
    info->size = bar.size;
    info->flags =
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | (bar.mmap ? VFIO_REGION_INFO_FLAG_MMAP : 0u);
    std::size_t caps = 0;
    if (bar.has_sparse)
        caps += sizeof(vfio_region_info_cap_sparse_mmap) + bar.sparse.size() * sizeof(vfio_region_sparse_mmap_area);
    const std::size_t msix_at = sizeof(vfio_region_info) + ((caps + 7) & ~std::size_t{7});
    if (bar.msix_mappable) caps = msix_at - sizeof(vfio_region_info) + sizeof(vfio_info_cap_header);
    if (caps == 0) return 0;
    info->flags |= VFIO_REGION_INFO_FLAG_CAPS;
    const std::size_t needed = sizeof(vfio_region_info) + caps;
    if (given < needed) {
        info->argsz = static_cast<std::uint32_t>(needed);
        return 0;
    }
    auto* base = static_cast<std::uint8_t*>(arg);
    std::uint32_t first = 0;
    if (bar.has_sparse) {
        vfio_region_info_cap_sparse_mmap sparse{};
        sparse.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
        sparse.header.version = 1;
        sparse.header.next = bar.msix_mappable ? static_cast<std::uint32_t>(msix_at) : 0;
        sparse.nr_areas = static_cast<std::uint32_t>(bar.sparse.size());
        std::memcpy(base + sizeof(vfio_region_info), &sparse, sizeof sparse);
        for (std::size_t i = 0; i < bar.sparse.size(); ++i) {
            vfio_region_sparse_mmap_area area{bar.sparse[i].offset, bar.sparse[i].size};
            std::memcpy(base + sizeof(vfio_region_info) + sizeof sparse + i * sizeof area, &area, sizeof area);
        }
        first = sizeof(vfio_region_info);
    }
    if (bar.msix_mappable) {
        vfio_info_cap_header header{VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0};
        std::memcpy(base + msix_at, &header, sizeof header);
        if (!first) first = static_cast<std::uint32_t>(msix_at);
    }
    info->cap_offset = first;
    return 0;
}

int MockVfioHost::device_ioctl(Fd& f, unsigned long request, void* arg) {
    MockDevice& d = devices_.at(f.bdf);
    switch (request) {
        case VFIO_DEVICE_GET_INFO: {
            auto* info = static_cast<vfio_device_info*>(arg);
            info->flags = VFIO_DEVICE_FLAGS_PCI | (d.can_reset ? VFIO_DEVICE_FLAGS_RESET : 0u);
            info->num_regions = VFIO_PCI_NUM_REGIONS;
            info->num_irqs = VFIO_PCI_NUM_IRQS;
            return 0;
        }
        case VFIO_DEVICE_GET_REGION_INFO: return region_info(d, arg);
        case VFIO_DEVICE_GET_IRQ_INFO: {
            auto* info = static_cast<vfio_irq_info*>(arg);
            info->flags = VFIO_IRQ_INFO_EVENTFD;
            info->count = info->index == VFIO_PCI_MSIX_IRQ_INDEX ? d.msix_vectors
                                                                 : (info->index == VFIO_PCI_INTX_IRQ_INDEX ? 1 : 0);
            return 0;
        }
        case VFIO_DEVICE_SET_IRQS: {
            auto* set = static_cast<vfio_irq_set*>(arg);
            ++d.set_irqs_calls;
            if (set->index != VFIO_PCI_MSIX_IRQ_INDEX) return -EINVAL;
            if (set->flags & VFIO_IRQ_SET_DATA_NONE) {
                if (set->count != 0) return -EINVAL;
                d.msix_enabled = false;
                d.msix_eventfds.clear();
                return 0;
            }
            if (set->start + set->count > d.msix_vectors) return -EINVAL;
            d.msix_eventfds.assign(set->count, -1);
            std::memcpy(d.msix_eventfds.data(), set->data, set->count * sizeof(std::int32_t));
            d.msix_enabled = set->count > 0;
            return 0;
        }
        case VFIO_DEVICE_RESET:
            if (!d.can_reset) return -EINVAL;
            ++d.resets;
            return 0;
        default: return -ENOTTY;
    }
}

}  // namespace devices::vfio::testing
