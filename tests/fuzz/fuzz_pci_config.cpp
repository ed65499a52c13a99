// libFuzzer target: an assigned NVMe-like function (VfioPciFunction over the mock VFIO host)
// behind the ECAM host bridge, driven by arbitrary guest accesses: config reads and writes of
// any size and offset, BAR window accesses (MSI-X table, PBA, forwarded registers, direct parts),
// MSI-X control and masking, interrupts arriving, bypass changes through the DmaMapper. Nothing
// may crash, touch memory outside the mock device or guest RAM, or leave mappings behind.
#include <linux/pci_regs.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "devices/pci/host_bridge.hpp"
#include "devices/vfio/dma_mapper.hpp"
#include "iommu/iommu.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/support/vfio_test_env.hpp"
#include "vmm/base/layout.hpp"
#include "vmm/base/log.hpp"

namespace {

namespace layout = vmm::layout;
using devices::vfio::testing::VfioFixture;

using fuzz::Input;

constexpr std::size_t kSizes[] = {1, 2, 4, 8, 1, 2, 4, 4};

// One of the layouts lkvm must handle (QEMU's emulated NVMe has the first two): MSI-X sharing BAR0,
// in its own BAR, or BAR0 with sparse mmap areas that exclude the table.
std::unique_ptr<VfioFixture> make_fixture(std::uint8_t layout_byte, std::uint8_t vectors_byte) {
    const unsigned vectors = 1 + vectors_byte % 80;
    switch (layout_byte % 4) {
        case 0: return std::make_unique<VfioFixture>(vectors, 0, 0x2000, 0x3000, 0x4000);
        case 1: return std::make_unique<VfioFixture>(vectors, 4, 0x0, 0x800, 0x2000);
        case 2: {
            auto fx = std::make_unique<VfioFixture>(vectors, 0, 0x4000, 0x5000, 0x8000);
            auto& bar = fx->host.device(VfioFixture::kBdf).bars[0];
            bar.has_sparse = true;
            bar.sparse = {{0, 0x4000}, {0x6000, 0x2000}};
            return fx;
        }
        default: {
            auto fx = std::make_unique<VfioFixture>(vectors, 0, 0x1800, 0x1c00, 0x2000);
            fx->host.device(VfioFixture::kBdf).bars[0].msix_mappable = true;
            return fx;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool quiet = [] {
        vmm::set_log_level(vmm::LogLevel::Error);
        return true;
    }();
    (void)quiet;
    if (size < 2) return 0;
    Input in{data, size};
    const std::uint8_t layout_byte = in.take<std::uint8_t>();
    auto fx = make_fixture(layout_byte, in.take<std::uint8_t>());

    const std::vector<vmm::GuestRange> ram{layout::range(layout::kRamBase, 1 << 20)};
    vmm::GuestMemory memory{ram};
    auto mapper = std::make_shared<devices::vfio::DmaMapper>(memory, fx->host);
    auto model = std::make_shared<iommu::Iommu>();
    devices::pci::HostBridge bridge({layout::range(layout::kPcieEcamBase, layout::kPcieEcamSize),
                                     layout::range(layout::kPcieIoBase, layout::kPcieIoSize),
                                     layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
                                     layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size)});
    {
        auto device = fx->open_device();
        const auto container = device->group()->container();
        devices::vfio::VfioPciFunction function(std::move(device), fx->allocator, {fx->windows, fx->msi, mapper.get()});
        const devices::pci::Bdf bdf = bridge.add(function);
        function.set_address(bdf);
        mapper->add_endpoint(bdf.rid(), container);
        model->add_endpoint({bdf.rid(), {}, mapper});

        for (int ops = 0; !in.empty() && ops < 256; ++ops) {
            const std::uint8_t op = in.take<std::uint8_t>();
            const std::uint16_t offset16 = in.take<std::uint16_t>();
            const std::uint8_t shape = in.take<std::uint8_t>();
            const std::uint64_t value = in.take<std::uint64_t>();
            const std::size_t n = kSizes[shape & 7];
            std::uint8_t buffer[8];
            std::memcpy(buffer, &value, sizeof buffer);
            std::span<std::uint8_t> bytes(buffer, n);
            // Config space of device 0 (the function) or 1 (empty), any offset in 4 KiB.
            const std::uint64_t ecam = (static_cast<std::uint64_t>((shape >> 3) & 1) << 15) | (offset16 & 0xfff);
            // BAR window offsets near the initial BARs, or anywhere in the first 16 MiB.
            const std::uint64_t window = (shape & 0x80) ? (std::uint64_t{offset16} << 8) : offset16;
            switch (op % 10) {
                case 0: bridge.mmio_read(ecam, bytes); break;
                case 1: bridge.mmio_write(ecam, bytes); break;
                case 2: fx->windows.window(0).mmio_read(window, bytes); break;
                case 3: fx->windows.window(0).mmio_write(window, bytes); break;
                case 4: fx->windows.window(1).mmio_read(window, bytes); break;
                case 5: fx->windows.window(1).mmio_write(window, bytes); break;
                case 6: {  // shortcuts to the interesting states: decode, mastering, MSI-X on
                    std::uint8_t command[2] = {static_cast<std::uint8_t>(value & 0x7), 0};
                    bridge.mmio_write(PCI_COMMAND, command);
                    std::uint8_t control[2] = {0, static_cast<std::uint8_t>(value >> 8 & 0xc0)};
                    bridge.mmio_write(0x42, control);
                    break;
                }
                case 7: {  // an interrupt from the device on some vector
                    const auto& fds = fx->host.device(VfioFixture::kBdf).msix_eventfds;
                    if (!fds.empty()) {
                        const std::uint64_t one = 1;
                        if (::write(fds[offset16 % fds.size()], &one, sizeof one) < 0) std::abort();
                    }
                    break;
                }
                case 8: model->set_unattached_bypass(value & 1); break;
                default:
                    if (value & 1) model->attach(bdf.rid(), offset16 & 3, 0);
                    else
                        model->map(offset16 & 3, (value >> 8) & 0xfffff000, ((value >> 8) & 0xfffff000) + 0xfff,
                                   layout::kRamBase + (offset16 & 0xff) * 0x1000, iommu::kMapRead | iommu::kMapWrite);
                    break;
            }
        }
    }
    // The function is gone: its BARs are off the windows, its routes gone.
    if (fx->windows.trap_count() != 0 || fx->windows.direct_count() != 0 || !fx->msi.routes.empty()) std::abort();
    model.reset();
    mapper.reset();
    if (fx->host.dma_entries() != 0) std::abort();
    return 0;
}
