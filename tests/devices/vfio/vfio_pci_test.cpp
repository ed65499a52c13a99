#include "devices/vfio/vfio_pci.hpp"

#include <doctest/doctest.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "iommu/iommu.hpp"
#include "tests/support/vfio_test_env.hpp"

namespace {

using devices::vfio::VfioPciFunction;
using devices::vfio::testing::VfioFixture;

constexpr std::uint64_t kBar0 = 0x40000000;  // where the allocator puts the first BAR

std::uint32_t cfg_read(VfioPciFunction& f, std::uint16_t offset, std::size_t size = 4) {
    std::array<std::uint8_t, 4> data{};
    f.config_read(offset, std::span(data.data(), size));
    return static_cast<std::uint32_t>(devices::pci::load_le(std::span(data.data(), size)));
}

void cfg_write(VfioPciFunction& f, std::uint16_t offset, std::uint32_t value, std::size_t size = 4) {
    std::array<std::uint8_t, 4> data{};
    devices::pci::store_le(std::span(data.data(), size), value);
    f.config_write(offset, std::span<const std::uint8_t>(data.data(), size));
}

std::uint32_t mmio_read32(VfioFixture& fx, std::uint64_t addr) {
    std::array<std::uint8_t, 4> data{};
    fx.windows.window(0).mmio_read(addr - vmm::layout::kPcieMmio32Base, data);
    return static_cast<std::uint32_t>(devices::pci::load_le(data));
}

void mmio_write32(VfioFixture& fx, std::uint64_t addr, std::uint32_t value) {
    std::array<std::uint8_t, 4> data{};
    devices::pci::store_le(data, value);
    fx.windows.window(0).mmio_write(addr - vmm::layout::kPcieMmio32Base, data);
}

// Programs MSI-X vector `v` through the trapped table page: ITS doorbell, EventID `data`.
void program_vector(VfioFixture& fx, unsigned v, std::uint32_t data, bool masked) {
    const std::uint64_t entry = kBar0 + 0x2000 + 16 * v;
    mmio_write32(fx, entry + 0, 0x08090040);
    mmio_write32(fx, entry + 4, 0);
    mmio_write32(fx, entry + 8, data);
    mmio_write32(fx, entry + 12, masked ? 1 : 0);
}

}  // namespace

TEST_CASE("VfioPciFunction presents a filtered, virtualized config space") {
    VfioFixture fx;
    auto f = fx.open_function();
    CHECK(cfg_read(*f, PCI_VENDOR_ID) == 0x00101b36);
    CHECK(cfg_read(*f, PCI_CLASS_REVISION) == 0x01080202);
    CHECK(cfg_read(*f, PCI_HEADER_TYPE, 1) == 0);    // multi-function bit cleared
    CHECK(cfg_read(*f, PCI_INTERRUPT_PIN, 1) == 0);  // no INTx
    CHECK(cfg_read(*f, PCI_ROM_ADDRESS) == 0);
    CHECK((cfg_read(*f, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) != 0);
    CHECK((cfg_read(*f, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT) == 0);
    CHECK(cfg_read(*f, PCI_SUBSYSTEM_VENDOR_ID, 2) == 0x1af4);
    // Capability list: MSI-X (0x40) -> PCIe (0x60) -> end; MSI (0x50) and vendor (0x9c) dropped.
    CHECK(cfg_read(*f, PCI_CAPABILITY_LIST, 1) == 0x40);
    CHECK(cfg_read(*f, 0x40, 2) == (0x6000 | PCI_CAP_ID_MSIX));
    CHECK(cfg_read(*f, 0x60, 2) == PCI_CAP_ID_EXP);
    CHECK(cfg_read(*f, 0x50) == 0);
    CHECK(cfg_read(*f, 0x64) == 0x12345678);  // PCIe body passed through
    CHECK(cfg_read(*f, 0x42, 2) == 64);       // MSI-X: 65 vectors, disabled
    CHECK(cfg_read(*f, 0x44) == 0x2000);      // the device's own layout, not relocated
    CHECK(cfg_read(*f, 0x100) == 0);          // no extended capabilities
    // Passed-through writes reach the device; header writes to read-only fields do not stick.
    const std::size_t writes = fx.host.device(VfioFixture::kBdf).config_writes.size();
    cfg_write(*f, 0x68, 0x2810, 2);
    CHECK(fx.host.device(VfioFixture::kBdf).config_writes.size() == writes + 1);
    cfg_write(*f, PCI_VENDOR_ID, 0xdeadbeef);
    CHECK(cfg_read(*f, PCI_VENDOR_ID) == 0x00101b36);
    cfg_write(*f, PCI_INTERRUPT_LINE, 0x33, 1);
    CHECK(cfg_read(*f, PCI_INTERRUPT_LINE, 1) == 0x33);
}

TEST_CASE("BARs size like hardware and start inside the 32-bit window") {
    VfioFixture fx;
    auto f = fx.open_function();
    CHECK(cfg_read(*f, PCI_BASE_ADDRESS_0) == (kBar0 | PCI_BASE_ADDRESS_MEM_TYPE_64));
    CHECK(cfg_read(*f, PCI_BASE_ADDRESS_1) == 0);
    cfg_write(*f, PCI_BASE_ADDRESS_0, 0xffffffff);
    cfg_write(*f, PCI_BASE_ADDRESS_1, 0xffffffff);
    CHECK(cfg_read(*f, PCI_BASE_ADDRESS_0) == (0xffffc000 | PCI_BASE_ADDRESS_MEM_TYPE_64));
    CHECK(cfg_read(*f, PCI_BASE_ADDRESS_1) == 0xffffffff);
    CHECK(cfg_read(*f, PCI_BASE_ADDRESS_2) == 0);  // not implemented
}

TEST_CASE("Memory decode maps the registers directly and traps only the MSI-X pages of a shared BAR") {
    VfioFixture fx;
    auto f = fx.open_function();
    CHECK(fx.slots.slots.empty());
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    REQUIRE(fx.slots.slots.size() == 1);
    const auto& slot = fx.slots.slots.begin()->second;
    CHECK(slot.range.base().value == kBar0);
    CHECK(slot.range.size() == 0x2000);
    CHECK(fx.windows.trap_count() == 1);
    // The slot is the device's BAR: what the guest writes there reaches the device.
    std::memcpy(static_cast<std::uint8_t*>(slot.host) + 0x14, "\x01\x00\x46\x00", 4);
    CHECK(fx.host.bar_bytes(VfioFixture::kBdf, 0, 0x14, 4) == std::vector<std::uint8_t>{1, 0, 0x46, 0});
    // The device saw memory decode enabled, INTx disabled.
    const auto& config = fx.host.device(VfioFixture::kBdf).config;
    CHECK((config[PCI_COMMAND] & PCI_COMMAND_MEMORY) != 0);
    CHECK((config[PCI_COMMAND + 1] << 8 & PCI_COMMAND_INTX_DISABLE) != 0);
    // A trapped access past the table (same page) goes to the device.
    fx.host.set_bar_bytes(VfioFixture::kBdf, 0, 0x2800, {0x11, 0x22, 0x33, 0x44});
    CHECK(mmio_read32(fx, kBar0 + 0x2800) == 0x44332211);
    // The guest moves the BAR: the slot follows. Decode off removes everything.
    cfg_write(*f, PCI_BASE_ADDRESS_0, 0x40100000 | PCI_BASE_ADDRESS_MEM_TYPE_64);
    REQUIRE(fx.slots.slots.size() == 1);
    CHECK(fx.slots.slots.begin()->second.range.base().value == 0x40100000);
    cfg_write(*f, PCI_COMMAND, 0, 2);
    CHECK(fx.slots.slots.empty());
    CHECK(fx.windows.trap_count() == 0);
}

TEST_CASE("A BAR the guest moves outside the windows or off a page is not given to it directly") {
    VfioFixture fx;
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    cfg_write(*f, PCI_BASE_ADDRESS_0, 0x80000000 | PCI_BASE_ADDRESS_MEM_TYPE_64);  // guest RAM
    CHECK(fx.slots.slots.empty());
    CHECK(fx.windows.trap_count() == 0);
}

TEST_CASE("MSI-X vectors become routes to the ITS with the function's RID, masked ones do not") {
    VfioFixture fx;
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    program_vector(fx, 0, 5, false);
    CHECK(fx.msi.routes.empty());  // MSI-X still disabled
    cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE, 2);
    const auto& device = fx.host.device(VfioFixture::kBdf);
    CHECK(device.msix_enabled);
    REQUIRE(device.msix_eventfds.size() == 65);
    REQUIRE(fx.msi.routes.size() == 1);
    const auto& route = fx.msi.routes.begin()->second;
    CHECK(route.rid == devices::pci::Bdf{0, 3, 0}.rid());
    CHECK(route.message == devices::pci::MsiMessage{0x08090040, 5});
    CHECK(fx.msi.routes.begin()->first == device.msix_eventfds[0]);

    program_vector(fx, 1, 6, true);
    CHECK(fx.msi.routes.size() == 1);
    mmio_write32(fx, kBar0 + 0x2000 + 16 + 12, 0);  // unmask vector 1
    CHECK(fx.msi.routes.size() == 2);
    cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);
    CHECK(fx.msi.routes.empty());
    CHECK(cfg_read(*f, 0x42, 2) == (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL | 64));
    cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE, 2);
    CHECK(fx.msi.routes.size() == 2);
    // Reading the table back through the trap.
    CHECK(mmio_read32(fx, kBar0 + 0x2000 + 16 + 8) == 6);
    cfg_write(*f, 0x42, 0, 2);
    CHECK_FALSE(device.msix_enabled);
    CHECK(fx.msi.routes.empty());
}

TEST_CASE("The PBA shows interrupts that arrived while a vector was masked") {
    VfioFixture fx;
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE, 2);
    program_vector(fx, 2, 9, true);
    CHECK(mmio_read32(fx, kBar0 + 0x3000) == 0);
    const std::uint64_t one = 1;
    REQUIRE(::write(fx.host.device(VfioFixture::kBdf).msix_eventfds[2], &one, sizeof one) == sizeof one);
    CHECK(mmio_read32(fx, kBar0 + 0x3000) == 4);
    mmio_write32(fx, kBar0 + 0x3000, 0);  // the PBA is read-only
    CHECK(mmio_read32(fx, kBar0 + 0x3000) == 4);
}

TEST_CASE("Malformed MSI-X accesses are answered RAZ/WI and counted") {
    VfioFixture fx;
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    std::array<std::uint8_t, 2> half{0xff, 0xff};
    fx.windows.window(0).mmio_write(0x2000, half);
    fx.windows.window(0).mmio_read(0x2002, half);
    CHECK(half == std::array<std::uint8_t, 2>{0, 0});
    std::array<std::uint8_t, 8> straddle{};
    fx.windows.window(0).mmio_read(0x1ffc + 0x0, straddle);  // starts in the direct part: no piece claims it
    CHECK(f->stats().bad_accesses == 2);
    CHECK(f->stats().msix_accesses == 2);
}

TEST_CASE("Bus Master Enable is what makes a bypassing endpoint pin guest RAM") {
    VfioFixture fx;
    const std::vector<vmm::GuestRange> ram{*vmm::GuestRange::make(vmm::GuestPhysAddr{0x80000000}, 1 << 20)};
    vmm::GuestMemory memory{ram};
    auto mapper = std::make_shared<devices::vfio::DmaMapper>(memory, fx.host);
    auto device = fx.open_device();
    const int container = device->group()->container()->fd();
    mapper->add_endpoint(devices::pci::Bdf{0, 3, 0}.rid(), device->group()->container());
    auto model = std::make_shared<iommu::Iommu>();
    model->add_endpoint({devices::pci::Bdf{0, 3, 0}.rid(), {}, mapper});
    CHECK(model->set_unattached_bypass(true));
    {
        VfioPciFunction f(std::move(device), fx.allocator, {fx.windows, fx.msi, mapper.get()});
        f.set_address({0, 3, 0});
        CHECK(fx.host.dma().at(container).empty());
        cfg_write(f, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
        CHECK(fx.host.dma().at(container).size() == 1);
        CHECK((fx.host.device(VfioFixture::kBdf).config[PCI_COMMAND] & PCI_COMMAND_MASTER) != 0);
        cfg_write(f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
        CHECK(fx.host.dma().at(container).empty());
        cfg_write(f, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    }
    // The function is gone: bus mastering off, identity map dropped.
    CHECK(fx.host.dma().at(container).empty());
}

TEST_CASE("The device is reset at start and at exit, and its fd closes before its group") {
    VfioFixture fx;
    {
        auto f = fx.open_function();
        CHECK(fx.host.device(VfioFixture::kBdf).resets == 1);
        cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
        cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE, 2);
        program_vector(fx, 0, 1, false);
        CHECK(fx.msi.routes.size() == 1);
    }
    const auto& device = fx.host.device(VfioFixture::kBdf);
    CHECK(device.resets == 2);
    CHECK_FALSE(device.msix_enabled);
    CHECK((device.config[PCI_COMMAND] & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) == 0);
    CHECK(fx.msi.routes.empty());
    CHECK(fx.slots.slots.empty());
    CHECK(fx.windows.trap_count() == 0);
    REQUIRE(fx.host.close_log().size() == 3);
    CHECK(fx.host.close_log()[0] == "device 0000:00:01.0");
    CHECK(fx.host.close_log()[1] == "group 1");
    CHECK(fx.host.close_log()[2] == "container");
    CHECK(fx.host.open_fds() == 0);
}

TEST_CASE("msix-exclusive-bar layout: BAR0 entirely direct, the MSI-X BAR entirely trapped") {
    VfioFixture fx(65, 4, 0x0, 0x800, 0x2000);
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    REQUIRE(fx.slots.slots.size() == 1);
    CHECK(fx.slots.slots.begin()->second.range.size() == 0x2000);
    CHECK(fx.windows.trap_count() == 1);
    CHECK(f->describe().find("BAR4") != std::string::npos);
}

TEST_CASE("Sparse mmap areas that exclude the table are honoured") {
    VfioFixture fx(65, 0, 0x4000, 0x5000, 0x8000);
    auto& bar = fx.host.device(VfioFixture::kBdf).bars[0];
    bar.has_sparse = true;
    bar.sparse = {{0, 0x4000}, {0x6000, 0x2000}};
    auto f = fx.open_function();
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    CHECK(fx.slots.slots.size() == 2);
    CHECK(fx.windows.trap_count() == 1);  // 0x4000-0x5fff: table and PBA pages
}

TEST_CASE("A hostile capability list cannot loop and an MSI-X table outside its BAR is hidden") {
    VfioFixture fx;
    auto& config = fx.host.device(VfioFixture::kBdf).config;
    config[0x61] = 0x40;  // PCIe -> MSI-X -> ... a cycle
    config[0x44] = 0x00;
    config[0x45] = 0x50;  // table at 0x5000, past the 16 KiB BAR
    auto f = fx.open_function();
    CHECK(f->msix_vectors() == 0);
    CHECK(cfg_read(*f, PCI_CAPABILITY_LIST, 1) == 0x60);
    CHECK(cfg_read(*f, 0x60, 2) == PCI_CAP_ID_EXP);
}

TEST_CASE("A refused route leaves the vector unrouted and is counted") {
    VfioFixture fx;
    auto f = fx.open_function();
    fx.msi.refuse = true;
    cfg_write(*f, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    cfg_write(*f, 0x42, PCI_MSIX_FLAGS_ENABLE, 2);
    program_vector(fx, 0, 1, false);
    CHECK(fx.msi.routes.empty());
    CHECK(f->stats().route_failures >= 1);
}
