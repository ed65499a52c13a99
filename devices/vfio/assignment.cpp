#include "devices/vfio/assignment.hpp"

#include <algorithm>
#include <cinttypes>
#include <set>

#include "devices/vfio/host_geometry.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace devices::vfio {

Assignment::Assignment(Host& host, const vmm::GuestMemory& memory, const AssignmentConfig& config,
                       pci::HostBridge& bridge, pci::BarAllocator& allocator, pci::BarSpace& bars, pci::MsiRouter& msi)
    : mapper_(std::make_shared<DmaMapper>(memory, host)) {
    // 1. Every BDF resolved to a group through sysfs before anything is opened, so a bad one
    //    costs nothing to undo.
    std::vector<std::pair<std::string, unsigned>> wanted;
    std::set<std::string> seen;
    for (const std::string& text : config.bdfs) {
        auto bdf = normalize_bdf(text);
        if (!bdf)
            throw vmm::SetupError("--vfio-pci " + text + ": not a PCI address (expected DDDD:BB:DD.F or BB:DD.F)");
        if (!seen.insert(*bdf).second) throw vmm::SetupError("--vfio-pci " + *bdf + " is given twice");
        wanted.push_back({*bdf, group_of(host, *bdf)});
    }
    if (wanted.size() > bridge.free_devices())
        throw vmm::SetupError("--vfio-pci: " + std::to_string(wanted.size()) + " devices do not fit the " +
                              std::to_string(bridge.free_devices()) + " free slots of PCI bus 0");
    if (wanted.empty()) return;

    // 2. Containers and groups (container policy: dma_mapper.hpp).
    for (const auto& [bdf, number] : wanted) {
        if (groups_.count(number)) continue;
        if (containers_.empty() || config.viommu)
            containers_.push_back(std::make_shared<Container>(
                host, config.viommu ? "group " + std::to_string(number) : std::string("shared container")));
        groups_[number] = std::make_shared<Group>(host, number, containers_.back());
    }

    // 3. Devices and functions (each reset, its config space read, its BARs mmapped).
    for (const auto& [bdf, number] : wanted) {
        auto device = std::make_unique<Device>(groups_.at(number), bdf);
        functions_.push_back(std::make_unique<VfioPciFunction>(
            std::move(device), allocator, VfioPciEnv{bars, msi, config.viommu ? mapper_.get() : nullptr}));
    }

    // 4. DMA: without a vIOMMU all guest RAM now (the last step that can fail); with one,
    //    nothing until the guest attaches and maps, or selects bypass.
    if (!config.viommu) mapper_->map_all_ram(containers_.front());

    // 5. Onto the bus: the RID is the endpoint ID and the ITS DeviceID.
    for (const auto& function : functions_) {
        const pci::Bdf bdf = bridge.add(*function);
        function->set_address(bdf);
        if (config.viommu) mapper_->add_endpoint(bdf.rid(), function->device().group()->container());
        vmm::log_debug("%s: guest %s (RID 0x%04x), %s", std::string(function->name()).c_str(), bdf.to_string().c_str(),
                       bdf.rid(), config.viommu ? "behind the virtio-iommu" : "all guest RAM mapped");
    }
}

Assignment::~Assignment() {
    stop();
    functions_.clear();
    groups_.clear();
    containers_.clear();
}

void Assignment::stop() {
    if (stopped_) return;
    stopped_ = true;
    for (const auto& function : functions_) function->stop();
    // What the guest left behind, then proof that nothing stays: `--debug` shows both.
    if (vmm::log_enabled(vmm::LogLevel::Debug)) {
        for (const DmaSpaceStats& s : mapper_->stats().spaces)
            vmm::log_debug("vfio: %s at exit: %" PRIu64 " host DMA entries, %" PRIu64 " KiB pinned; %" PRIu64
                           " maps and %" PRIu64 " unmaps issued",
                           s.name.c_str(), s.host_mappings, s.pinned_bytes >> 10, s.host_maps, s.host_unmaps);
    }
    mapper_->shutdown();
    if (vmm::log_enabled(vmm::LogLevel::Debug)) {
        const DmaMapperStats after = mapper_->stats();
        std::uint64_t entries = 0;
        for (const DmaSpaceStats& s : after.spaces) entries += s.host_mappings;
        vmm::log_debug("vfio: after teardown: %" PRIu64 " host DMA entries, %" PRIu64 " KiB pinned", entries,
                       after.pinned_bytes >> 10);
    }
}

std::vector<const HostIommuInfo*> Assignment::host_infos() const {
    std::vector<const HostIommuInfo*> out;
    for (const auto& c : containers_) out.push_back(&c->info());
    return out;
}

std::vector<int> Assignment::group_fds() const {
    std::vector<int> out;
    for (const auto& [number, group] : groups_) out.push_back(group->fd());
    return out;
}

std::vector<iommu::EndpointConfig> Assignment::iommu_endpoints(std::uint64_t input_first, std::uint64_t input_last,
                                                               IovaRange msi, std::size_t max_regions) const {
    std::vector<iommu::EndpointConfig> out;
    for (const auto& function : functions_) {
        const Group& group = *function->device().group();
        const std::vector<HostReservedRegion> host = group.reserved_regions();
        out.push_back(
            {function->address().rid(),
             endpoint_reserved_regions(group.container()->info(), host, input_first, input_last, msi, max_regions),
             mapper_});
    }
    return out;
}

std::string Assignment::describe() const {
    std::string text;
    for (const auto& function : functions_) text += function->describe();
    return text + mapper_->describe();
}

}  // namespace devices::vfio
