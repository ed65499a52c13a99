// devices::vfio::Device: one assigned PCI function's VFIO device fd: regions (BARs, config space;
// sparse-mmap and MSI-X-mappable capabilities), IRQ indexes, reset, and bounds-checked region
// I/O and mmap (include/uapi/linux/vfio.h, VFIO_PCI_*_REGION_INDEX).
#pragma once

#include <linux/vfio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/vfio/group.hpp"
#include "devices/vfio/host.hpp"

namespace devices::vfio {

struct SparseArea {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};

struct RegionInfo {
    std::uint32_t flags = 0;   // VFIO_REGION_INFO_FLAG_*
    std::uint64_t size = 0;    // 0: not implemented
    std::uint64_t offset = 0;  // file offset of the region in the device fd
    // Only these parts may be mmapped when `has_sparse` (VFIO_REGION_INFO_CAP_SPARSE_MMAP).
    bool has_sparse = false;
    std::vector<SparseArea> sparse;
    bool msix_mappable = false;  // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE

    bool readable() const { return flags & VFIO_REGION_INFO_FLAG_READ; }
    bool writable() const { return flags & VFIO_REGION_INFO_FLAG_WRITE; }
    bool mappable() const { return flags & VFIO_REGION_INFO_FLAG_MMAP; }
};

// Threads: region I/O and SET_IRQS come from vCPU threads under the owning function's lock.
class Device {
public:
    // VFIO_GROUP_GET_DEVICE_FD + VFIO_DEVICE_GET_INFO (must be a vfio-pci device) + region and
    // IRQ info. Throws vmm::SetupError naming the device.
    Device(std::shared_ptr<Group> group, std::string bdf);
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    const std::string& bdf() const { return bdf_; }
    const std::shared_ptr<Group>& group() const { return group_; }
    Host& host() const { return group_->host(); }
    int fd() const { return fd_.get(); }

    bool can_reset() const { return flags_ & VFIO_DEVICE_FLAGS_RESET; }
    // VFIO_DEVICE_RESET when the device supports it; false otherwise or on failure.
    bool reset();

    // VFIO_PCI_BAR0_REGION_INDEX .. VFIO_PCI_CONFIG_REGION_INDEX (an unknown index: size 0).
    const RegionInfo& region(std::uint32_t index) const;
    std::uint32_t irq_count(std::uint32_t index) const;

    // Region I/O: false unless [offset, offset + size) lies inside the region and the host
    // transferred every byte.
    bool read(std::uint32_t region, std::uint64_t offset, std::span<std::uint8_t> data) const;
    bool write(std::uint32_t region, std::uint64_t offset, std::span<const std::uint8_t> data) const;
    // Maps [offset, offset + size) of a mappable region (page-aligned), or nothing.
    std::optional<HostMmap> map(std::uint32_t region, std::uint64_t offset, std::uint64_t size) const;

    // VFIO_DEVICE_SET_IRQS(DATA_EVENTFD | ACTION_TRIGGER) for vectors [start, start + fds.size());
    // 0 or -errno.
    int enable_irqs(std::uint32_t index, std::uint32_t start, std::span<const std::int32_t> eventfds) const;
    // VFIO_DEVICE_SET_IRQS(DATA_NONE | ACTION_TRIGGER, count 0): the whole index off.
    int disable_irqs(std::uint32_t index) const;

private:
    RegionInfo query_region(std::uint32_t index) const;

    std::shared_ptr<Group> group_;  // declared before fd_: the device fd closes first (EBUSY rule)
    std::string bdf_;
    HostFd fd_;
    std::uint32_t flags_ = 0;
    std::array<RegionInfo, VFIO_PCI_NUM_REGIONS> regions_{};
    std::array<std::uint32_t, VFIO_PCI_NUM_IRQS> irq_counts_{};
};

}  // namespace devices::vfio
