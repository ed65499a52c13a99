// The machine-wide part of lkvm's device tree (root, chosen, aliases, memory, cpus, psci, timer)
// followed by every device's own node. Bindings: Linux Documentation/devicetree/bindings
// (arm/cpus.yaml, arm/psci.yaml, timer/arm,arch_timer.yaml, perf/arm,pmu.yaml) and booting.rst
// for /chosen.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fdt/contributor.hpp"
#include "vmm/base/address.hpp"

namespace fdt {

struct MachineDescription {
    vmm::GuestRange ram;
    std::vector<std::uint64_t> cpu_mpidrs;  // MPIDR_EL1 of each vCPU, in vCPU order
    std::string bootargs;
    std::optional<vmm::GuestRange> initrd;
    std::string stdout_path;             // full node path, e.g. "/serial@1000000"; empty: none
    std::vector<std::uint8_t> rng_seed;  // /chosen/rng-seed (seeds the guest's CRNG); may be empty
    std::vector<const Contributor*> devices;
    std::optional<std::uint32_t> pmu_ppi = std::nullopt;  // the vCPUs' PMUv3 and its overflow PPI; none: no PMU
};

// The finished blob. Throws std::runtime_error / std::logic_error on an impossible tree.
std::vector<std::uint8_t> build_machine_tree(const MachineDescription& machine);

}  // namespace fdt
