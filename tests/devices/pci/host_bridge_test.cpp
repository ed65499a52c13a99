#include "devices/pci/host_bridge.hpp"

#include <doctest/doctest.h>
#include <libfdt.h>

#include <array>
#include <string>
#include <vector>

#include "fdt/machine_tree.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"

namespace {

namespace layout = vmm::layout;
using devices::pci::Bdf;
using devices::pci::HostBridge;

struct RecordingFunction final : devices::pci::Function {
    std::string_view name() const override { return "recording"; }
    void config_read(std::uint16_t offset, std::span<std::uint8_t> data) override {
        last_offset = offset;
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(0xa0 + i);
        ++reads;
    }
    void config_write(std::uint16_t offset, std::span<const std::uint8_t> data) override {
        last_offset = offset;
        last_size = data.size();
        ++writes;
    }
    std::uint16_t last_offset = 0;
    std::size_t last_size = 0;
    unsigned reads = 0, writes = 0;
};

devices::pci::HostBridgeLayout rig_layout() {
    return {layout::range(layout::kPcieEcamBase, layout::kPcieEcamSize),
            layout::range(layout::kPcieIoBase, layout::kPcieIoSize),
            layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
            layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size)};
}

std::uint64_t ecam(unsigned device, unsigned function, unsigned reg) { return (device << 15) | (function << 12) | reg; }

}  // namespace

TEST_CASE("HostBridge decodes ECAM offsets to the function and register") {
    HostBridge bridge(rig_layout());
    RecordingFunction a, b;
    CHECK(bridge.add(a) == Bdf{0, 0, 0});
    CHECK(bridge.add(b) == Bdf{0, 1, 0});
    CHECK(Bdf{0, 1, 0}.rid() == 0x08);
    CHECK(Bdf{0, 3, 0}.to_string() == "00:03.0");

    std::array<std::uint8_t, 4> data{};
    bridge.mmio_read(ecam(1, 0, 0x44), data);
    CHECK(b.reads == 1);
    CHECK(b.last_offset == 0x44);
    CHECK(data[0] == 0xa0);

    const std::array<std::uint8_t, 2> word{1, 2};
    bridge.mmio_write(ecam(0, 0, 0xffe), word);
    CHECK(a.writes == 1);
    CHECK(a.last_offset == 0xffe);
    CHECK(a.last_size == 2);
}

TEST_CASE("HostBridge answers absent functions with all ones and bad accesses with RAZ/WI") {
    HostBridge bridge(rig_layout());
    RecordingFunction a;
    bridge.add(a);
    std::array<std::uint8_t, 4> data{};
    bridge.mmio_read(ecam(5, 0, 0), data);
    CHECK(data == std::array<std::uint8_t, 4>{0xff, 0xff, 0xff, 0xff});
    bridge.mmio_read(ecam(0, 1, 0), data);  // function 1 of a single-function device
    CHECK(data[0] == 0xff);
    bridge.mmio_read(ecam(0, 0, 2), data);  // misaligned dword
    CHECK(data == std::array<std::uint8_t, 4>{0, 0, 0, 0});
    std::array<std::uint8_t, 8> qword{};
    bridge.mmio_read(ecam(0, 0, 0), qword);  // 8-byte config access
    CHECK(a.reads == 0);
    const std::array<std::uint8_t, 4> w{};
    bridge.mmio_write(ecam(0, 0, 1), w);
    CHECK(a.writes == 0);
    bridge.mmio_read(HostBridge::kBusConfigSize + 4, data);  // beyond bus 0
    CHECK(a.reads == 0);
}

TEST_CASE("HostBridge refuses a 33rd device") {
    HostBridge bridge(rig_layout());
    std::vector<RecordingFunction> functions(33);
    for (unsigned i = 0; i < 32; ++i) bridge.add(functions[i]);
    CHECK_THROWS_AS(bridge.add(functions[32]), vmm::SetupError);
    CHECK(bridge.function_count() == 32);
}

TEST_CASE("HostBridge describes a generic ECAM host with msi-map and, behind the vIOMMU, iommu-map") {
    for (bool iommu : {false, true}) {
        HostBridge bridge(rig_layout());
        bridge.set_iommu(iommu);
        fdt::MachineDescription m{
            *layout::ram(256 << 20), {0x80000000}, "console=ttyS0", std::nullopt, "", {}, {&bridge}};
        std::vector<std::uint8_t> blob = fdt::build_machine_tree(m);
        const void* fdt = blob.data();
        const int node = fdt_path_offset(fdt, "/pcie@10000000");
        REQUIRE(node >= 0);
        CHECK(std::string(static_cast<const char*>(fdt_getprop(fdt, node, "compatible", nullptr))) ==
              "pci-host-ecam-generic");
        CHECK(std::string(static_cast<const char*>(fdt_getprop(fdt, node, "device_type", nullptr))) == "pci");
        auto cells = [&](const char* name) {
            int len = 0;
            const auto* p = static_cast<const fdt32_t*>(fdt_getprop(fdt, node, name, &len));
            std::vector<std::uint32_t> out;
            for (int i = 0; p && i < len / 4; ++i) out.push_back(fdt32_to_cpu(p[i]));
            return out;
        };
        CHECK(cells("reg") == std::vector<std::uint32_t>{0, 0x10000000, 0, 0x100000});
        CHECK(cells("bus-range") == std::vector<std::uint32_t>{0, 0});
        CHECK(cells("#address-cells") == std::vector<std::uint32_t>{3});
        CHECK(cells("msi-map") == std::vector<std::uint32_t>{0, 2, 0, 0x10000});
        const auto ranges = cells("ranges");
        REQUIRE(ranges.size() == 21);
        CHECK(ranges[0] == 0x01000000);  // I/O
        CHECK(ranges[7] == 0x02000000);  // 32-bit memory
        CHECK(ranges[8] == 0);
        CHECK(ranges[9] == 0x40000000);
        CHECK(ranges[13] == 0x40000000);  // size 1 GiB
        CHECK(ranges[14] == 0x43000000);  // 64-bit prefetchable
        CHECK(ranges[15] == 0x80);
        CHECK(ranges[19] == 0x80);  // size 512 GiB
        if (iommu) CHECK(cells("iommu-map") == std::vector<std::uint32_t>{0, 3, 0, 0x10000});
        else CHECK(fdt_getprop(fdt, node, "iommu-map", nullptr) == nullptr);
        CHECK(fdt_getprop(fdt, node, "dma-coherent", nullptr) != nullptr);
    }
}
