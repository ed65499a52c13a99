// devices::vfio::Assignment: every --vfio-pci function of one machine, built in one step:
// BDFs checked (all of them, before anything is opened), containers per policy (one shared
// container without a vIOMMU, one per host IOMMU group with --viommu vfio, see dma_mapper.hpp),
// groups, devices, VfioPciFunctions on the host bridge, the DmaMapper, and with a vIOMMU the
// endpoints (ID = RID) and their PROBE regions. Torn down in the safe order: DMA unmapped while
// the groups are open, then each device stopped, reset and closed before its group.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/pci/bar_allocator.hpp"
#include "devices/pci/bar_windows.hpp"
#include "devices/pci/host_bridge.hpp"
#include "devices/pci/msi_router.hpp"
#include "devices/vfio/container.hpp"
#include "devices/vfio/dma_mapper.hpp"
#include "devices/vfio/group.hpp"
#include "devices/vfio/host.hpp"
#include "devices/vfio/vfio_pci.hpp"
#include "iommu/iommu.hpp"
#include "vmm/base/guest_memory.hpp"

namespace devices::vfio {

struct AssignmentConfig {
    std::vector<std::string> bdfs;  // as given on the command line
    bool viommu = false;            // --viommu vfio: endpoints of the virtio-iommu
};

class Assignment {
public:
    // Throws vmm::SetupError with one line naming the device or group; nothing stays open,
    // mapped or on the bridge then.
    Assignment(Host& host, const vmm::GuestMemory& memory, const AssignmentConfig& config, pci::HostBridge& bridge,
               pci::BarAllocator& allocator, pci::BarSpace& bars, pci::MsiRouter& msi);
    ~Assignment();

    // Teardown step one, before anything else of the machine goes (the vIOMMU's reset included):
    // every function stops (no more DMA), then every DMA mapping is dropped. The destructor
    // calls it if the machine did not.
    void stop();
    Assignment(const Assignment&) = delete;
    Assignment& operator=(const Assignment&) = delete;

    const std::shared_ptr<DmaMapper>& mapper() const { return mapper_; }
    const std::vector<std::unique_ptr<VfioPciFunction>>& functions() const { return functions_; }
    // One per container, for the vIOMMU's geometry (narrow_geometry).
    std::vector<const HostIommuInfo*> host_infos() const;
    std::vector<int> group_fds() const;
    // --viommu vfio: one endpoint per function with its RESV_MEM regions (`msi` = the ITS
    // doorbell frame) and the mapper as listener.
    std::vector<iommu::EndpointConfig> iommu_endpoints(std::uint64_t input_first, std::uint64_t input_last,
                                                       IovaRange msi, std::size_t max_regions) const;
    std::string describe() const;

private:
    std::shared_ptr<DmaMapper> mapper_;
    bool stopped_ = false;
    std::vector<std::shared_ptr<Container>> containers_;
    std::map<unsigned, std::shared_ptr<Group>> groups_;
    std::vector<std::unique_ptr<VfioPciFunction>> functions_;  // declared last: destroyed first
};

}  // namespace devices::vfio
