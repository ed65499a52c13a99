// Test doubles for what an assigned function talks to besides VFIO: a recording MsiRouter and a
// DirectMapper that records the "KVM memory slots" it is asked for, plus an assembled fixture
// (mock host with one NVMe-like device, BAR windows, allocator) used by the VFIO tests and the
// pci_config fuzz target.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/pci/bar_allocator.hpp"
#include "devices/pci/bar_windows.hpp"
#include "devices/pci/msi_router.hpp"
#include "devices/vfio/vfio_device.hpp"
#include "devices/vfio/vfio_pci.hpp"
#include "tests/support/mock_vfio_host.hpp"
#include "vmm/base/layout.hpp"

namespace devices::vfio::testing {

class RecordingMsiRouter final : public pci::MsiRouter {
public:
    struct Route {
        std::uint16_t rid;
        pci::MsiMessage message;
    };
    bool route(int eventfd, std::uint16_t rid, const pci::MsiMessage& message) override {
        ++route_calls;
        if (refuse) return false;
        routes[eventfd] = {rid, message};
        return true;
    }
    void unroute(int eventfd) override {
        ++unroute_calls;
        routes.erase(eventfd);
    }
    std::map<int, Route> routes;
    unsigned route_calls = 0, unroute_calls = 0;
    bool refuse = false;
};

class RecordingDirectMapper final : public pci::DirectMapper {
public:
    std::optional<std::uint32_t> map(vmm::GuestRange range, void* host) override {
        if (refuse) return std::nullopt;
        slots.insert_or_assign(next, Slot{range, host});
        return next++;
    }
    void unmap(std::uint32_t handle) override { slots.erase(handle); }
    struct Slot {
        vmm::GuestRange range;
        void* host;
    };
    std::map<std::uint32_t, Slot> slots;
    std::uint32_t next = 100;
    bool refuse = false;
};

// One NVMe-like device at 0000:00:01.0 in group 1 (the rig's L1), ready to be opened.
struct VfioFixture {
    static constexpr const char* kBdf = "0000:00:01.0";
    MockVfioHost host;
    RecordingMsiRouter msi;
    RecordingDirectMapper slots;
    pci::BarWindows windows{{vmm::layout::range(vmm::layout::kPcieMmio32Base, vmm::layout::kPcieMmio32Size),
                             vmm::layout::range(vmm::layout::kPcieMmio64Base, vmm::layout::kPcieMmio64Size)},
                            &slots};
    pci::BarAllocator allocator{vmm::layout::range(vmm::layout::kPcieMmio32Base, vmm::layout::kPcieMmio32Size),
                                vmm::layout::range(vmm::layout::kPcieMmio64Base, vmm::layout::kPcieMmio64Size), 4096};

    // QEMU's default NVMe: 16 KiB BAR0 with registers at 0, MSI-X table at 0x2000, PBA at 0x3000.
    explicit VfioFixture(unsigned vectors = 65, unsigned msix_bar = 0, std::uint64_t table = 0x2000,
                         std::uint64_t pba = 0x3000, std::uint64_t bar0 = 0x4000) {
        MockDevice& d = host.add_device(kBdf, 1);
        MockVfioHost::make_nvme_like(d, bar0, vectors, msix_bar, table, pba);
    }
    std::unique_ptr<Device> open_device() {
        auto container = std::make_shared<Container>(host, "container of group 1");
        auto group = std::make_shared<Group>(host, 1, container);
        return std::make_unique<Device>(group, kBdf);
    }
    std::unique_ptr<VfioPciFunction> open_function(DmaMapper* dma = nullptr) {
        auto f = std::make_unique<VfioPciFunction>(open_device(), allocator, VfioPciEnv{windows, msi, dma});
        f->set_address(pci::Bdf{0, 3, 0});
        return f;
    }
};

}  // namespace devices::vfio::testing
