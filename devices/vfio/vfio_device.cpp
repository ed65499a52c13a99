#include "devices/vfio/vfio_device.hpp"

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "devices/vfio/info_caps.hpp"
#include "vmm/base/address.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace devices::vfio {
namespace {

constexpr std::uint32_t kMaxSparseAreas = 64;

}  // namespace

Device::Device(std::shared_ptr<Group> group, std::string bdf) : group_(std::move(group)), bdf_(std::move(bdf)) {
    Host& k = host();
    int fd = group_->open_device(bdf_);
    if (fd < 0) vmm::throw_errno("--vfio-pci " + bdf_ + ": VFIO_GROUP_GET_DEVICE_FD", -fd);
    fd_ = HostFd(k, fd);

    vfio_device_info info{};
    info.argsz = sizeof info;
    int r = k.ioctl(fd, VFIO_DEVICE_GET_INFO, &info);
    if (r < 0) vmm::throw_errno("--vfio-pci " + bdf_ + ": VFIO_DEVICE_GET_INFO", -r);
    if (!(info.flags & VFIO_DEVICE_FLAGS_PCI)) throw vmm::SetupError("--vfio-pci " + bdf_ + ": not a vfio-pci device");
    if (info.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX || info.num_irqs <= VFIO_PCI_MSIX_IRQ_INDEX)
        throw vmm::SetupError("--vfio-pci " + bdf_ + ": the host reports too few regions or IRQ indexes");
    flags_ = info.flags;
    for (std::uint32_t i = 0; i < VFIO_PCI_NUM_REGIONS && i < info.num_regions; ++i) regions_[i] = query_region(i);
    if (regions_[VFIO_PCI_CONFIG_REGION_INDEX].size < 256)
        throw vmm::SetupError("--vfio-pci " + bdf_ + ": config space region is missing");
    for (std::uint32_t i = 0; i < VFIO_PCI_NUM_IRQS && i < info.num_irqs; ++i) {
        vfio_irq_info irq{};
        irq.argsz = sizeof irq;
        irq.index = i;
        if (k.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, &irq) == 0 && (irq.flags & VFIO_IRQ_INFO_EVENTFD))
            irq_counts_[i] = irq.count;
    }
}

RegionInfo Device::query_region(std::uint32_t index) const {
    Host& k = host();
    std::vector<std::uint8_t> buffer(sizeof(vfio_region_info));
    RegionInfo out;
    for (int attempt = 0; attempt < 2; ++attempt) {
        vfio_region_info info{};
        info.argsz = static_cast<std::uint32_t>(buffer.size());
        info.index = index;
        std::memcpy(buffer.data(), &info, sizeof info);
        if (k.ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, buffer.data()) < 0) return {};
        std::memcpy(&info, buffer.data(), sizeof info);
        if (info.argsz > buffer.size() && attempt == 0 && info.argsz <= 65536) {
            buffer.resize(info.argsz);
            continue;
        }
        out.flags = info.flags;
        out.size = info.size;
        out.offset = info.offset;
        if ((info.flags & VFIO_REGION_INFO_FLAG_CAPS) && info.cap_offset != 0) {
            for_each_info_cap(
                buffer, info.cap_offset, [&](std::uint16_t id, std::uint16_t, std::span<const std::uint8_t> body) {
                    if (id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
                        vfio_region_info_cap_sparse_mmap sparse;
                        if (!read_cap(body, sparse)) return;
                        out.has_sparse = true;
                        const std::size_t room = (body.size() - sizeof sparse) / sizeof(vfio_region_sparse_mmap_area);
                        for (std::size_t i = 0; i < sparse.nr_areas && i < room && i < kMaxSparseAreas; ++i) {
                            vfio_region_sparse_mmap_area area{};
                            std::memcpy(&area, body.data() + sizeof sparse + i * sizeof area, sizeof area);
                            // Keep only areas inside the region.
                            auto end = vmm::checked_add(area.offset, area.size);
                            if (area.size != 0 && end && *end <= out.size)
                                out.sparse.push_back({area.offset, area.size});
                        }
                    } else if (id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
                        out.msix_mappable = true;
                    }
                });
        }
        break;
    }
    return out;
}

bool Device::reset() {
    if (!can_reset()) return false;
    return host().ioctl(fd_.get(), VFIO_DEVICE_RESET, nullptr) == 0;
}

const RegionInfo& Device::region(std::uint32_t index) const {
    static const RegionInfo kNone{};
    return index < regions_.size() ? regions_[index] : kNone;
}

std::uint32_t Device::irq_count(std::uint32_t index) const {
    return index < irq_counts_.size() ? irq_counts_[index] : 0;
}

bool Device::read(std::uint32_t index, std::uint64_t offset, std::span<std::uint8_t> data) const {
    const RegionInfo& r = region(index);
    auto end = vmm::checked_add(offset, data.size());
    if (data.empty() || !r.readable() || !end || *end > r.size) return false;
    ssize_t n = host().pread(fd_.get(), data.data(), data.size(), static_cast<off_t>(r.offset + offset));
    return n == static_cast<ssize_t>(data.size());
}

bool Device::write(std::uint32_t index, std::uint64_t offset, std::span<const std::uint8_t> data) const {
    const RegionInfo& r = region(index);
    auto end = vmm::checked_add(offset, data.size());
    if (data.empty() || !r.writable() || !end || *end > r.size) return false;
    ssize_t n = host().pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(r.offset + offset));
    return n == static_cast<ssize_t>(data.size());
}

std::optional<HostMmap> Device::map(std::uint32_t index, std::uint64_t offset, std::uint64_t size) const {
    const RegionInfo& r = region(index);
    auto end = vmm::checked_add(offset, size);
    if (size == 0 || !r.mappable() || !end || *end > r.size) return std::nullopt;
    int prot = (r.readable() ? PROT_READ : 0) | (r.writable() ? PROT_WRITE : 0);
    void* p = host().mmap(size, prot, fd_.get(), static_cast<off_t>(r.offset + offset));
    if (!p) return std::nullopt;
    return HostMmap(host(), p, size);
}

int Device::enable_irqs(std::uint32_t index, std::uint32_t start, std::span<const std::int32_t> eventfds) const {
    std::vector<std::uint8_t> buffer(sizeof(vfio_irq_set) + eventfds.size_bytes());
    vfio_irq_set set{};
    set.argsz = static_cast<std::uint32_t>(buffer.size());
    set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set.index = index;
    set.start = start;
    set.count = static_cast<std::uint32_t>(eventfds.size());
    std::memcpy(buffer.data(), &set, sizeof set);
    if (!eventfds.empty()) std::memcpy(buffer.data() + sizeof set, eventfds.data(), eventfds.size_bytes());
    return host().ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, buffer.data());
}

int Device::disable_irqs(std::uint32_t index) const {
    vfio_irq_set set{};
    set.argsz = sizeof set;
    set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    set.index = index;
    return host().ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, &set);
}

}  // namespace devices::vfio
