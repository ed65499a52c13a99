#include "vmm/vfio_setup.hpp"

#include "vmm/base/layout.hpp"
#include "vmm/base/log.hpp"

namespace vmm {
namespace {

// The ITS translation frame (GITS_TRANSLATER's 64 KiB page): the only MSI doorbell lkvm's guests
// have. Routes must target it; PROBE reports it as the endpoints' MSI region (CONFORMANCE.md L9).
constexpr std::uint64_t kItsTranslationFrame = layout::kGicItsBase + 0x10000;
constexpr std::uint64_t kItsFrameSize = 0x10000;
// Memory slot 0 is guest RAM.
constexpr std::uint32_t kFirstBarSlot = 1;

}  // namespace

VfioSetup::VfioSetup(kvm::Vm& vm, const GuestMemory& memory, const std::vector<std::string>& bdfs, bool behind_viommu)
    : msi_(vm, layout::kGicNrIrqs - 32, layout::range(kItsTranslationFrame, kItsFrameSize)),
      slots_(vm, kFirstBarSlot),
      windows_({layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
                layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size)},
               &slots_),
      bridge_({layout::range(layout::kPcieEcamBase, layout::kPcieEcamSize),
               layout::range(layout::kPcieIoBase, layout::kPcieIoSize),
               layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
               layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size)}),
      allocator_(layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
                 layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size), host_.page_size()) {
    assignment_ = std::make_unique<devices::vfio::Assignment>(
        host_, memory, devices::vfio::AssignmentConfig{bdfs, behind_viommu}, bridge_, allocator_, windows_, msi_);
    kvm_vfio_.emplace(vm);
    for (int fd : assignment_->group_fds()) kvm_vfio_->add_group(fd);
    if (log_enabled(LogLevel::Debug)) {
        const std::string text = describe();
        for (std::size_t at = 0, end = 0; at < text.size(); at = end + 1) {
            end = text.find('\n', at);
            if (end == std::string::npos) end = text.size();
            log_debug("%s", text.substr(at, end - at).c_str());
        }
    }
}

VfioSetup::~VfioSetup() { stop(); }

void VfioSetup::add_to_bus(MmioBus& bus) {
    bus.add(bridge_.ecam_window(), bridge_, "pcie-ecam");
    for (std::size_t i = 0; i < windows_.window_count(); ++i)
        bus.add(windows_.window_range(i), windows_.window(i), i == 0 ? "pcie-mmio32" : "pcie-mmio64");
}

iommu::IovaWindow VfioSetup::narrow(const iommu::IovaWindow& wanted, std::uint64_t max_granule) const {
    return devices::vfio::narrow_geometry(wanted, assignment_->host_infos(), max_granule);
}

void VfioSetup::add_endpoints(iommu::Iommu& model, const iommu::IovaWindow& window) {
    const devices::vfio::IovaRange doorbell{kItsTranslationFrame, kItsTranslationFrame + kItsFrameSize - 1};
    for (iommu::EndpointConfig& endpoint : assignment_->iommu_endpoints(window.input_first, window.input_last, doorbell,
                                                                        model.limits().max_reserved_regions))
        model.add_endpoint(std::move(endpoint));
    bridge_.set_iommu(true);
}

void VfioSetup::stop() {
    if (assignment_) assignment_->stop();
}

std::string VfioSetup::describe() const { return assignment_->describe(); }

}  // namespace vmm
