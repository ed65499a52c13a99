#include "fdt/machine_tree.hpp"

#include <doctest/doctest.h>
#include <libfdt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "devices/gic_v3_node.hpp"
#include "devices/uart_16550.hpp"
#include "devices/virtio_mmio_node.hpp"
#include "vmm/base/layout.hpp"

namespace {

namespace layout = vmm::layout;

struct NullLevel final : vmm::LevelInterruptLine {
    void set_level(bool) override {}
};
struct NullOutput final : devices::SerialOutput {
    void write_bytes(std::span<const std::uint8_t>) override {}
};

// A tree like the one lkvm boots: 2 CPUs, initrd, UART, GIC + ITS, two virtio-mmio slots.
struct Tree {
    NullLevel level;
    NullOutput output;
    devices::Uart16550 uart{layout::kUart, layout::kUartSpi, layout::kUartClockHz, level, output};
    devices::GicV3Node gic{layout::kGicDist, layout::gic_redistributors(2), layout::kGicIts};
    devices::VirtioMmioNode blk{layout::virtio_mmio_slot(0), layout::virtio_mmio_spi(0)};
    devices::VirtioMmioNode rng{layout::virtio_mmio_slot(1), layout::virtio_mmio_spi(1)};
    std::vector<std::uint8_t> blob;

    Tree() {
        fdt::MachineDescription m{*layout::ram(256 << 20),
                                  {0x80000000, 0x80000001},
                                  "console=ttyS0 earlycon",
                                  vmm::GuestRange::make(vmm::GuestPhysAddr{0x8fc00000}, 0x2b6000),
                                  "/serial@1000000",
                                  std::vector<std::uint8_t>(64, 7),
                                  {}};
        // Deliberately out of address order: the tree sorts contributors by address.
        m.devices = {&rng, &gic, &blk, &uart};
        blob = fdt::build_machine_tree(m);
    }
    const void* fdt() const { return blob.data(); }
    int node(const char* path) const { return fdt_path_offset(fdt(), path); }
    std::string string(const char* path, const char* prop) const {
        const char* s = static_cast<const char*>(fdt_getprop(fdt(), node(path), prop, nullptr));
        return s ? s : "<missing>";
    }
    std::vector<std::uint32_t> cells(const char* path, const char* prop) const {
        int len = 0;
        const auto* p = static_cast<const fdt32_t*>(fdt_getprop(fdt(), node(path), prop, &len));
        std::vector<std::uint32_t> out;
        for (int i = 0; p && i < len / 4; ++i) out.push_back(fdt32_to_cpu(p[i]));
        return out;
    }
};

}  // namespace

TEST_CASE("The machine tree has the root, memory, cpus, psci and timer nodes Linux needs") {
    Tree t;
    REQUIRE(fdt_check_header(t.fdt()) == 0);
    CHECK(t.string("/", "compatible") == "linux,dummy-virt");
    CHECK(t.cells("/", "#address-cells") == std::vector<std::uint32_t>{2});
    CHECK(t.cells("/", "interrupt-parent") == std::vector<std::uint32_t>{fdt::phandle_value(fdt::Phandle::Gic)});
    CHECK(t.string("/memory@80000000", "device_type") == "memory");
    CHECK(t.cells("/memory@80000000", "reg") == std::vector<std::uint32_t>{0, 0x80000000, 0, 256 << 20});
    CHECK(t.string("/cpus/cpu@1", "enable-method") == "psci");
    CHECK(t.string("/cpus/cpu@0", "compatible") == "arm,arm-v8");
    CHECK(t.cells("/cpus/cpu@1", "reg") == std::vector<std::uint32_t>{1});  // MPIDR bit 31 (RES1) dropped
    CHECK(fdt_stringlist_search(t.fdt(), t.node("/psci"), "compatible", "arm,psci-0.2") >= 0);
    CHECK(t.string("/psci", "method") == "hvc");
    CHECK(t.string("/timer", "compatible") == "arm,armv8-timer");
    CHECK(t.cells("/timer", "interrupts").size() == 12);
    CHECK(t.cells("/timer", "interrupts")[1] == layout::kTimerSecurePhysPpi);
}

TEST_CASE("The machine tree's chosen node carries bootargs, stdout-path, initrd bounds and an rng seed") {
    Tree t;
    CHECK(t.string("/chosen", "bootargs") == "console=ttyS0 earlycon");
    CHECK(t.string("/chosen", "stdout-path") == "/serial@1000000");
    CHECK(t.cells("/chosen", "linux,initrd-start") == std::vector<std::uint32_t>{0, 0x8fc00000});
    CHECK(t.cells("/chosen", "linux,initrd-end") == std::vector<std::uint32_t>{0, 0x8feb6000});
    CHECK(t.cells("/chosen", "rng-seed").size() == 16);
    CHECK(t.string("/aliases", "serial0") == "/serial@1000000");
    CHECK(fdt_path_offset(t.fdt(), t.string("/chosen", "stdout-path").c_str()) >= 0);
}

TEST_CASE("The GIC node describes distributor, redistributors and an ITS child with phandles") {
    Tree t;
    CHECK(t.string("/intc@8000000", "compatible") == "arm,gic-v3");
    CHECK(t.cells("/intc@8000000", "#interrupt-cells") == std::vector<std::uint32_t>{3});
    CHECK(fdt_getprop(t.fdt(), t.node("/intc@8000000"), "interrupt-controller", nullptr) != nullptr);
    CHECK(t.cells("/intc@8000000", "reg") ==
          std::vector<std::uint32_t>{0, 0x08000000, 0, 0x10000, 0, 0x09000000, 0, 2 * 0x20000});
    CHECK(fdt_node_offset_by_phandle(t.fdt(), fdt::phandle_value(fdt::Phandle::Gic)) == t.node("/intc@8000000"));
    int its = t.node("/intc@8000000/its@8080000");
    REQUIRE(its >= 0);
    CHECK(t.string("/intc@8000000/its@8080000", "compatible") == "arm,gic-v3-its");
    CHECK(fdt_getprop(t.fdt(), its, "msi-controller", nullptr) != nullptr);
    CHECK(t.cells("/intc@8000000/its@8080000", "#msi-cells") == std::vector<std::uint32_t>{1});
    CHECK(fdt_node_offset_by_phandle(t.fdt(), fdt::phandle_value(fdt::Phandle::Its)) == its);
}

TEST_CASE("The UART and virtio-mmio nodes carry reg, interrupts and their bindings' properties") {
    Tree t;
    CHECK(t.string("/serial@1000000", "compatible") == "ns16550a");
    CHECK(t.cells("/serial@1000000", "clock-frequency") == std::vector<std::uint32_t>{1843200});
    CHECK(t.cells("/serial@1000000", "interrupts") == std::vector<std::uint32_t>{0, layout::kUartSpi, 4});
    CHECK(t.string("/virtio_mmio@2000200", "compatible") == "virtio,mmio");
    CHECK(t.cells("/virtio_mmio@2000200", "reg") == std::vector<std::uint32_t>{0, 0x2000200, 0, 0x200});
    CHECK(t.cells("/virtio_mmio@2000200", "interrupts") ==
          std::vector<std::uint32_t>{0, layout::virtio_mmio_spi(1), 1});
    CHECK(fdt_getprop(t.fdt(), t.node("/virtio_mmio@2000000"), "dma-coherent", nullptr) != nullptr);
}

TEST_CASE("Device nodes appear in address order whatever order they were given in") {
    Tree t;
    std::vector<std::string> names;
    int node;
    fdt_for_each_subnode(node, t.fdt(), 0) names.emplace_back(fdt_get_name(t.fdt(), node, nullptr));
    std::vector<std::string> devices(names.end() - 4, names.end());
    CHECK(devices ==
          std::vector<std::string>{"serial@1000000", "virtio_mmio@2000000", "virtio_mmio@2000200", "intc@8000000"});
}

TEST_CASE("With a PMU the tree has a pmu node on its PPI; without one, none") {
    Tree t;
    CHECK(t.node("/pmu") < 0);
    fdt::MachineDescription m{*layout::ram(64 << 20), {0}, "", std::nullopt, "", {}, {}};
    m.pmu_ppi = 7;
    auto blob = fdt::build_machine_tree(m);
    int pmu = fdt_path_offset(blob.data(), "/pmu");
    REQUIRE(pmu >= 0);
    CHECK(std::string(static_cast<const char*>(fdt_getprop(blob.data(), pmu, "compatible", nullptr))) ==
          "arm,armv8-pmuv3");
    int len = 0;
    const auto* cells = static_cast<const fdt32_t*>(fdt_getprop(blob.data(), pmu, "interrupts", &len));
    REQUIRE(len == 12);
    // GIC_PPI, PPI 7 (INTID 23), IRQ_TYPE_LEVEL_HIGH (perf/arm,pmu.yaml; interrupt-controller/arm,gic-v3.yaml).
    CHECK(fdt32_to_cpu(cells[0]) == 1);
    CHECK(fdt32_to_cpu(cells[1]) == 7);
    CHECK(fdt32_to_cpu(cells[2]) == 4);
}

TEST_CASE("A virtio-mmio node behind the vIOMMU names it in iommus") {
    devices::VirtioMmioNode blk{layout::virtio_mmio_slot(0), layout::virtio_mmio_spi(0)};
    devices::VirtioMmioNode viommu{layout::virtio_mmio_slot(1), layout::virtio_mmio_spi(1)};
    blk.set_iommu_endpoint(5);
    viommu.set_is_iommu(true);
    fdt::MachineDescription m{*layout::ram(64 << 20), {0}, "", std::nullopt, "", {}, {&blk, &viommu}};
    auto blob = fdt::build_machine_tree(m);
    int len = 0;
    const auto* iommus = static_cast<const fdt32_t*>(
        fdt_getprop(blob.data(), fdt_path_offset(blob.data(), "/virtio_mmio@2000000"), "iommus", &len));
    REQUIRE(len == 8);
    CHECK(fdt_node_offset_by_phandle(blob.data(), fdt32_to_cpu(iommus[0])) ==
          fdt_path_offset(blob.data(), "/virtio_mmio@2000200"));
    CHECK(fdt32_to_cpu(iommus[1]) == 5);
}

TEST_CASE("dtc decompiles the machine tree without warnings") {
    if (std::system("command -v dtc >/dev/null 2>&1") != 0) {
        MESSAGE("dtc not installed; skipped");
        return;
    }
    Tree t;
    char dtb[] = "/tmp/lkvm-tree-XXXXXX";
    int fd = ::mkstemp(dtb);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, t.blob.data(), t.blob.size()) == static_cast<ssize_t>(t.blob.size()));
    ::close(fd);
    std::string log = std::string(dtb) + ".log";
    int rc = std::system(("dtc -I dtb -O dts -o /dev/null " + std::string(dtb) + " 2>" + log).c_str());
    std::string warnings;
    if (FILE* f = std::fopen(log.c_str(), "r")) {
        char line[512];
        while (std::fgets(line, sizeof line, f)) warnings += line;
        std::fclose(f);
    }
    ::unlink(dtb);
    ::unlink(log.c_str());
    CHECK(rc == 0);
    CHECK_MESSAGE(warnings.empty(), warnings);
}
