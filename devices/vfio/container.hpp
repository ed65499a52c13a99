// devices::vfio::Container: one VFIO type-1 container (/dev/vfio/vfio, VFIO_TYPE1v2_IOMMU), i.e.
// one host IOMMU address space, and what the host says about it: page sizes, usable IOVA ranges and
// the remaining DMA entry budget (include/uapi/linux/vfio.h: VFIO_IOMMU_GET_INFO and its
// capabilities).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "devices/vfio/host.hpp"

namespace devices::vfio {

struct IovaRange {
    std::uint64_t first = 0;
    std::uint64_t last = 0;  // inclusive
    friend bool operator==(const IovaRange&, const IovaRange&) = default;
};

struct HostIommuInfo {
    std::uint64_t page_sizes = 0;            // VFIO iova_pgsizes (folded to >= host page size)
    std::vector<IovaRange> iova_ranges;      // usable IOVAs (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
    std::optional<std::uint32_t> dma_avail;  // VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, when reported
};

// Threads: map/unmap come from the DMA mapper under its lock; the ioctls are thread-safe anyway.
class Container {
public:
    // Opens /dev/vfio/vfio and checks the API version and TYPE1v2 support. Throws
    // vmm::SetupError with one line naming the problem (modules not loaded, permissions).
    Container(Host& host, std::string name);
    Container(const Container&) = delete;
    Container& operator=(const Container&) = delete;

    Host& host() const { return host_; }
    int fd() const { return fd_.get(); }
    const std::string& name() const { return name_; }

    // After the first group joined: selects TYPE1v2 and reads the host geometry. Idempotent.
    void enable_iommu();
    const HostIommuInfo& info() const { return info_; }

    // VFIO_IOMMU_MAP_DMA / UNMAP_DMA; 0 or -errno. At least one of read/write must be set.
    int map_dma(std::uint64_t iova, std::uint64_t size, const void* host, bool device_reads, bool device_writes);
    int unmap_dma(std::uint64_t iova, std::uint64_t size);
    // Everything the container maps (VFIO_DMA_UNMAP_FLAG_ALL); 0 or -errno.
    int unmap_all();

private:
    void read_info();

    Host& host_;
    std::string name_;
    HostFd fd_;
    bool iommu_enabled_ = false;
    HostIommuInfo info_;
};

}  // namespace devices::vfio
