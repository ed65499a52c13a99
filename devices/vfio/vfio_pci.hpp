// devices::vfio::VfioPciFunction: an assigned PCI function as the guest sees it. Config space is
// virtualized (header and BARs emulated, capabilities filtered to PM, PCIe and MSI-X with the PCIe
// and PM bodies passed through, MSI-X emulated); BARs keep the device's layout and are given to the
// guest directly where the host allows an mmap, trapped elsewhere, with only the MSI-X table and
// PBA pages trapped in a shared BAR; MSI-X vectors are VFIO eventfds that the MsiRouter turns into
// KVM irqfds on MSI routes. include/uapi/linux/vfio.h;
// Documentation/virt/kvm/devices/arm-vgic-its.rst.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/pci/bar_allocator.hpp"
#include "devices/pci/bar_windows.hpp"
#include "devices/pci/config_space.hpp"
#include "devices/pci/function.hpp"
#include "devices/pci/msi_router.hpp"
#include "devices/pci/msix_table.hpp"
#include "devices/vfio/bar_plan.hpp"
#include "devices/vfio/dma_mapper.hpp"
#include "devices/vfio/vfio_device.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

namespace devices::vfio {

struct VfioPciEnv {
    pci::BarSpace& bars;
    pci::MsiRouter& msi;
    DmaMapper* dma = nullptr;  // --viommu vfio: told about Bus Master Enable (bypass on demand)
};

struct VfioPciStats {
    std::uint64_t trapped_reads = 0, trapped_writes = 0;
    std::uint64_t msix_accesses = 0, routes = 0, unroutes = 0, route_failures = 0;
    std::uint64_t bad_accesses = 0;  // answered RAZ/WI
};

// Threads: config and trapped BAR accesses come from vCPU threads; one mutex guards all state.
// Lock order: this function -> BarWindows / MsiRouter / DmaMapper (none of them calls back).
class VfioPciFunction final : public pci::Function {
public:
    static constexpr unsigned kBars = 6;

    // Resets the device, reads and filters its config space, mmaps what the host allows and
    // places the BARs at addresses from `allocator` (decoded once the guest enables memory
    // space). Throws vmm::SetupError naming the device.
    VfioPciFunction(std::unique_ptr<Device> device, pci::BarAllocator& allocator, VfioPciEnv env);
    ~VfioPciFunction() override;
    VfioPciFunction(const VfioPciFunction&) = delete;
    VfioPciFunction& operator=(const VfioPciFunction&) = delete;

    // The guest address from the host bridge: its RID is the ITS DeviceID of its MSIs and its
    // endpoint ID in the DmaMapper. Call before the guest runs.
    void set_address(pci::Bdf bdf);
    pci::Bdf address() const { return bdf_; }

    std::string_view name() const override { return name_; }
    void config_read(std::uint16_t offset, std::span<std::uint8_t> data) override;
    void config_write(std::uint16_t offset, std::span<const std::uint8_t> data) override;

    // Teardown, before the DMA mapper goes: MSI-X off, BARs off the guest, decode and bus
    // mastering off, device reset. Idempotent; the destructor calls it too.
    void stop();

    const Device& device() const { return *device_; }
    VfioPciStats stats() const;
    // One line per BAR: size, guest address, direct and trapped pieces.
    std::string describe() const;
    // The MSI-X table's size, or 0 without MSI-X.
    unsigned msix_vectors() const;

private:
    struct TrapPiece final : vmm::MmioDevice {
        TrapPiece(VfioPciFunction& f, unsigned b, std::uint64_t o) : function(f), bar(b), offset(o) {}
        void mmio_read(std::uint64_t at, std::span<std::uint8_t> data) override;
        void mmio_write(std::uint64_t at, std::span<const std::uint8_t> data) override;
        VfioPciFunction& function;
        unsigned bar;
        std::uint64_t offset;  // of the piece inside the BAR
    };
    struct AreaMapping {
        std::uint64_t offset = 0;  // inside the BAR
        HostMmap mapping;
    };
    struct Bar {
        bool present = false;
        bool is_64bit = false;
        bool prefetchable = false;
        std::uint64_t size = 0;
        std::uint32_t flag_bits = 0;  // low 4 bits of the BAR register
        std::vector<BarPiece> plan;
        std::vector<AreaMapping> areas;                 // mmapped parts of the region
        std::vector<std::unique_ptr<TrapPiece>> traps;  // one per plan piece (fallback for direct ones)
        std::vector<std::optional<std::uint32_t>> direct_handles;
        std::vector<bool> trapped;
        std::optional<std::uint64_t> decoded_at;  // guest base while memory decode is on
    };
    struct Msix {
        std::uint16_t cap = 0;
        unsigned table_bar = 0, pba_bar = 0;
        std::uint64_t table_offset = 0, pba_offset = 0;
        pci::MsixTable table;
        std::vector<vmm::UniqueFd> eventfds;
        std::vector<std::optional<pci::MsiMessage>> routed;
        bool host_enabled = false;
        explicit Msix(unsigned vectors) : table(vectors) {}
    };
    struct Passthrough {
        std::uint16_t first;
        std::uint16_t size;
    };

    // ---- setup (vfio_pci_config.cpp)
    void build_config(pci::BarAllocator& allocator);
    void setup_bar(unsigned index, std::uint32_t raw, std::uint32_t raw_high, pci::BarAllocator& allocator);
    void setup_capabilities(std::span<const std::uint8_t> host);
    bool setup_msix(std::span<const std::uint8_t> host, std::uint16_t cap);
    void plan_bars();
    bool is_passthrough(std::uint16_t offset) const;
    template <typename Fn>
    void for_each_owner_run(std::uint16_t offset, std::size_t size, Fn&& fn) const;

    // ---- runtime (vfio_pci.cpp), lock held
    void command_changed(std::uint16_t before);
    void forward_command();
    std::optional<std::uint64_t> bar_address(unsigned index) const;
    void decode_bar(unsigned index);
    void undecode_bar(unsigned index);
    void bars_changed();
    void msix_control_changed();
    void update_vector(unsigned vector);
    bool vector_pending(unsigned vector) const;
    void bar_access(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> read,
                    std::span<const std::uint8_t> write);
    void shut_down();

    std::unique_ptr<Device> device_;
    VfioPciEnv env_;
    std::string name_;
    std::uint64_t page_size_;
    pci::Bdf bdf_;
    bool has_address_ = false;
    bool stopped_ = false;

    mutable std::mutex lock_;
    pci::ConfigSpace shadow_;
    std::vector<Passthrough> passthrough_;
    std::uint16_t host_command_ = 0;  // the device's own command bits we preserve
    std::array<Bar, kBars> bars_;
    std::optional<Msix> msix_;
    VfioPciStats stats_;
    vmm::RateLimiter log_;
};

}  // namespace devices::vfio
