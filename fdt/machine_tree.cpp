#include "fdt/machine_tree.hpp"

#include <algorithm>

#include "vmm/base/layout.hpp"

namespace fdt {

namespace {

// MPIDR affinity fields as a cpu node's reg (arm/cpus.yaml): Aff3 in bits 39:32, Aff2..Aff0 in
// bits 23:0; everything else (MT, U, RES1) is dropped.
constexpr std::uint64_t kMpidrAffinityMask = 0xff'00ff'ffffULL;

void write_cpus(Writer& w, const std::vector<std::uint64_t>& mpidrs) {
    bool two_cells =
        std::any_of(mpidrs.begin(), mpidrs.end(), [](std::uint64_t m) { return (m & kMpidrAffinityMask) >> 32 != 0; });
    auto cpus = w.node("cpus");
    w.property_u32("#address-cells", two_cells ? 2 : 1);
    w.property_u32("#size-cells", 0);
    for (std::uint64_t mpidr : mpidrs) {
        std::uint64_t reg = mpidr & kMpidrAffinityMask;
        auto cpu = w.node("cpu", reg);
        w.property_string("device_type", "cpu");
        w.property_string("compatible", "arm,arm-v8");
        w.property_string("enable-method", "psci");
        if (two_cells) w.property_u32s("reg", {static_cast<std::uint32_t>(reg >> 32), static_cast<std::uint32_t>(reg)});
        else w.property_u32("reg", static_cast<std::uint32_t>(reg));
    }
}

void write_chosen(Writer& w, const MachineDescription& m) {
    auto chosen = w.node("chosen");
    w.property_string("bootargs", m.bootargs);
    if (!m.stdout_path.empty()) w.property_string("stdout-path", m.stdout_path);
    if (m.initrd) {
        w.property_u64("linux,initrd-start", m.initrd->base().value);
        w.property_u64("linux,initrd-end", m.initrd->end());
    }
    if (!m.rng_seed.empty()) w.property_bytes("rng-seed", m.rng_seed);
}

}  // namespace

std::vector<std::uint8_t> build_machine_tree(const MachineDescription& m) {
    namespace layout = vmm::layout;
    using Trigger = Interrupt::Trigger;
    Writer w;
    Context context;

    // Root properties (the root node is opened by the Writer).
    w.property_string("compatible", "linux,dummy-virt");
    w.property_string("model", "lkvm");
    w.property_u32("#address-cells", 2);
    w.property_u32("#size-cells", 2);
    w.property_u32("interrupt-parent", context.phandle(Phandle::Gic));

    write_chosen(w, m);
    if (!m.stdout_path.empty()) {
        auto aliases = w.node("aliases");
        w.property_string("serial0", m.stdout_path);
    }
    {
        auto memory = w.node("memory", m.ram.base().value);
        w.property_string("device_type", "memory");
        w.property_reg({m.ram});
    }
    write_cpus(w, m.cpu_mpidrs);
    {
        auto psci = w.node("psci");
        w.property_strings("compatible", {"arm,psci-1.0", "arm,psci-0.2"});
        w.property_string("method", "hvc");
    }
    {
        // KVM exposes the virtual and physical EL1 timers as level-sensitive PPIs.
        auto timer = w.node("timer");
        w.property_string("compatible", "arm,armv8-timer");
        context.interrupts(w, {Interrupt::ppi(layout::kTimerSecurePhysPpi, Trigger::LevelHigh),
                               Interrupt::ppi(layout::kTimerPhysPpi, Trigger::LevelHigh),
                               Interrupt::ppi(layout::kTimerVirtPpi, Trigger::LevelHigh),
                               Interrupt::ppi(layout::kTimerHypPpi, Trigger::LevelHigh)});
        w.property_empty("always-on");
    }
    if (m.pmu_ppi) {
        // The same PPI on every CPU: one node, no interrupt-affinity.
        auto pmu = w.node("pmu");
        w.property_string("compatible", "arm,armv8-pmuv3");
        context.interrupts(w, {Interrupt::ppi(*m.pmu_ppi, Trigger::LevelHigh)});
    }

    std::vector<const Contributor*> devices = m.devices;
    std::stable_sort(devices.begin(), devices.end(),
                     [](const Contributor* a, const Contributor* b) { return a->fdt_address() < b->fdt_address(); });
    for (const Contributor* device : devices) device->write_fdt(w, context);

    return w.finish();
}

}  // namespace fdt
