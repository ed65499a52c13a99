// The device-tree description of the GICv3 (distributor + redistributors) and its ITS child.
// The KVM device itself is vmm::kvm::Gic; this is its portable half, unit-tested with libfdt.
// Binding: interrupt-controller/arm,gic-v3.yaml (ITS: msi-controller, #msi-cells = <1>).
#pragma once

#include <optional>

#include "fdt/contributor.hpp"
#include "vmm/base/address.hpp"

namespace devices {

class GicV3Node final : public fdt::Contributor {
public:
    GicV3Node(vmm::GuestRange distributor, vmm::GuestRange redistributors, std::optional<vmm::GuestRange> its)
        : distributor_(distributor), redistributors_(redistributors), its_(its) {}

    void write_fdt(fdt::Writer& writer, const fdt::Context& context) const override;
    std::uint64_t fdt_address() const override { return distributor_.base().value; }

private:
    vmm::GuestRange distributor_;
    vmm::GuestRange redistributors_;
    std::optional<vmm::GuestRange> its_;
};

}  // namespace devices
