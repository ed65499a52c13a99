// VfioPciFunction setup: the virtual config space built from the device's (PCI Local Bus 3.0
// 6.1-6.2, 6.7-6.8; PCIe 4.0 7.5.3, 7.8) and the BAR plans. Runtime behaviour is in vfio_pci.cpp.
#include <linux/pci_regs.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cinttypes>

#include "devices/vfio/vfio_pci.hpp"
#include "vmm/base/error.hpp"

namespace devices::vfio {
namespace {

constexpr std::uint16_t kCommandWritable =
    PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;
constexpr std::size_t kMaxCapabilities = 48;  // (256 - 64) / 4: more means a loop

std::uint32_t le32(std::span<const std::uint8_t> bytes, std::size_t at) {
    return static_cast<std::uint32_t>(pci::load_le(bytes.subspan(at, 4)));
}

}  // namespace

VfioPciFunction::VfioPciFunction(std::unique_ptr<Device> device, pci::BarAllocator& allocator, VfioPciEnv env)
    : device_(std::move(device)), env_(env), name_("vfio " + device_->bdf()), page_size_(device_->host().page_size()) {
    // A clean device: whatever the previous user left (a crashed VMM, the host driver) is gone.
    if (!device_->reset()) vmm::log_debug("%s: no VFIO_DEVICE_RESET (the device has no reset method)", name_.c_str());
    device_->disable_irqs(VFIO_PCI_MSIX_IRQ_INDEX);
    build_config(allocator);
    plan_bars();
    forward_command();  // memory decode and bus mastering off until the guest enables them
}

void VfioPciFunction::build_config(pci::BarAllocator& allocator) {
    std::array<std::uint8_t, pci::kLegacyConfigSize> host{};
    if (!device_->read(VFIO_PCI_CONFIG_REGION_INDEX, 0, host))
        throw vmm::SetupError("--vfio-pci " + device_->bdf() + ": cannot read its config space");
    if ((host[PCI_HEADER_TYPE] & PCI_HEADER_TYPE_MASK) != PCI_HEADER_TYPE_NORMAL)
        throw vmm::SetupError("--vfio-pci " + device_->bdf() + ": only endpoints can be assigned (header type " +
                              std::to_string(host[PCI_HEADER_TYPE] & PCI_HEADER_TYPE_MASK) + ")");
    auto copy = [&](std::size_t offset, std::size_t size) {
        shadow_.set(offset, size, pci::load_le(std::span(host).subspan(offset, size)));
    };
    copy(PCI_VENDOR_ID, 4);
    copy(PCI_CLASS_REVISION, 4);
    copy(PCI_SUBSYSTEM_VENDOR_ID, 4);
    // One function per device number: the multi-function bit would make the guest probe
    // functions 1-7 of this slot.
    shadow_.set_u8(PCI_HEADER_TYPE, PCI_HEADER_TYPE_NORMAL);
    shadow_.set_u16(PCI_STATUS,
                    static_cast<std::uint16_t>(pci::load_le(std::span(host).subspan(PCI_STATUS, 2)) &
                                               (PCI_STATUS_66MHZ | PCI_STATUS_FAST_BACK | PCI_STATUS_DEVSEL_MASK)));
    shadow_.set_writable(PCI_COMMAND, 2, kCommandWritable);
    shadow_.set_writable(PCI_CACHE_LINE_SIZE, 1, 0xff);
    shadow_.set_writable(PCI_LATENCY_TIMER, 1, 0xff);
    shadow_.set_writable(PCI_INTERRUPT_LINE, 1, 0xff);
    // No INTx: the pin reads 0, so the guest uses MSI-X. The ROM BAR reads 0 (not exposed).
    host_command_ = static_cast<std::uint16_t>(pci::load_le(std::span(host).subspan(PCI_COMMAND, 2)));

    for (unsigned i = 0; i < kBars; ++i) {
        const std::uint32_t raw = le32(host, PCI_BASE_ADDRESS_0 + 4 * i);
        const std::uint32_t high = i + 1 < kBars ? le32(host, PCI_BASE_ADDRESS_0 + 4 * (i + 1)) : 0;
        setup_bar(i, raw, high, allocator);
        if (bars_[i].is_64bit) ++i;
    }
    if (host[PCI_STATUS] & PCI_STATUS_CAP_LIST) setup_capabilities(host);
}

void VfioPciFunction::setup_bar(unsigned index, std::uint32_t raw, std::uint32_t, pci::BarAllocator& allocator) {
    Bar& bar = bars_[index];
    const RegionInfo& region = device_->region(VFIO_PCI_BAR0_REGION_INDEX + index);
    // I/O BARs are not exposed (lkvm's bridge has no I/O decoding), nor are empty ones.
    if (region.size == 0 || (raw & PCI_BASE_ADDRESS_SPACE_IO)) return;
    bar.is_64bit = (raw & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64 && index + 1 < kBars;
    bar.prefetchable = raw & PCI_BASE_ADDRESS_MEM_PREFETCH;
    bar.flag_bits = raw & ~static_cast<std::uint32_t>(PCI_BASE_ADDRESS_MEM_MASK);
    if (!bar.is_64bit) bar.flag_bits &= ~static_cast<std::uint32_t>(PCI_BASE_ADDRESS_MEM_TYPE_MASK);
    bar.size = std::bit_ceil(std::max<std::uint64_t>(region.size, 16));
    if (!bar.is_64bit && bar.size > (std::uint64_t{1} << 31))
        throw vmm::SetupError("--vfio-pci " + device_->bdf() + ": BAR" + std::to_string(index) +
                              " is too large for a 32-bit BAR");
    auto address = allocator.allocate(bar.size, bar.is_64bit, bar.prefetchable);
    if (!address)
        throw vmm::SetupError("--vfio-pci " + device_->bdf() + ": BAR" + std::to_string(index) + " (" +
                              std::to_string(bar.size >> 10) + " KiB) does not fit the PCI windows");
    bar.present = true;
    // Sizing (6.2.5.1): address bits below the size read as zero, whatever is written.
    const std::uint64_t mask = ~(bar.size - 1);
    const std::uint64_t value = *address | bar.flag_bits;
    shadow_.set_u32(PCI_BASE_ADDRESS_0 + 4 * index, static_cast<std::uint32_t>(value));
    shadow_.set_writable(PCI_BASE_ADDRESS_0 + 4 * index, 4, mask & PCI_BASE_ADDRESS_MEM_MASK & 0xffffffffu);
    if (bar.is_64bit) {
        shadow_.set_u32(PCI_BASE_ADDRESS_0 + 4 * (index + 1), static_cast<std::uint32_t>(value >> 32));
        shadow_.set_writable(PCI_BASE_ADDRESS_0 + 4 * (index + 1), 4, mask >> 32);
    }
}

void VfioPciFunction::setup_capabilities(std::span<const std::uint8_t> host) {
    // Keep power management and PCI Express (bodies passed through: vfio-pci already guards
    // them) and MSI-X (emulated). MSI is dropped so the guest uses MSI-X; vendor-specific and
    // others are dropped as lkvm cannot vouch for them. Kept capabilities stay at their offsets.
    std::vector<std::uint16_t> kept;
    std::array<bool, pci::kLegacyConfigSize> seen{};
    std::uint16_t at = host[PCI_CAPABILITY_LIST] & ~3u;
    for (std::size_t n = 0; at >= PCI_STD_HEADER_SIZEOF && n < kMaxCapabilities && !seen[at]; ++n) {
        seen[at] = true;
        const std::uint8_t id = host[at + PCI_CAP_LIST_ID];
        std::size_t size = 0;
        if (id == PCI_CAP_ID_PM) size = PCI_PM_SIZEOF;
        if (id == PCI_CAP_ID_EXP)
            size = (host[at + PCI_EXP_FLAGS] & PCI_EXP_FLAGS_VERS) >= 2 ? PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
                                                                        : PCI_CAP_EXP_ENDPOINT_SIZEOF_V1;
        if (id == PCI_CAP_ID_MSIX) size = PCI_CAP_MSIX_SIZEOF;
        const bool fits = size != 0 && at + size <= pci::kLegacyConfigSize;
        if (fits && (id != PCI_CAP_ID_MSIX || setup_msix(host, at))) {
            kept.push_back(at);
            if (id != PCI_CAP_ID_MSIX)
                passthrough_.push_back({static_cast<std::uint16_t>(at + 2), static_cast<std::uint16_t>(size - 2)});
        }
        at = host[at + PCI_CAP_LIST_NEXT] & ~3u;
    }
    // The emulated list: ids as the device has them, next pointers skipping dropped ones.
    shadow_.set_u8(PCI_CAPABILITY_LIST, kept.empty() ? 0 : static_cast<std::uint8_t>(kept.front()));
    for (std::size_t i = 0; i < kept.size(); ++i) {
        shadow_.set_u8(kept[i] + PCI_CAP_LIST_ID, host[kept[i] + PCI_CAP_LIST_ID]);
        shadow_.set_u8(kept[i] + PCI_CAP_LIST_NEXT, i + 1 < kept.size() ? static_cast<std::uint8_t>(kept[i + 1]) : 0);
    }
    if (!kept.empty()) shadow_.set_u16(PCI_STATUS, shadow_.u16(PCI_STATUS) | PCI_STATUS_CAP_LIST);
}

bool VfioPciFunction::setup_msix(std::span<const std::uint8_t> host, std::uint16_t cap) {
    const std::uint16_t control = static_cast<std::uint16_t>(pci::load_le(host.subspan(cap + PCI_MSIX_FLAGS, 2)));
    const std::uint32_t table = le32(host, cap + PCI_MSIX_TABLE);
    const std::uint32_t pba = le32(host, cap + PCI_MSIX_PBA);
    const unsigned vectors = (control & PCI_MSIX_FLAGS_QSIZE) + 1u;
    auto msix = std::make_optional<Msix>(vectors);
    msix->cap = cap;
    msix->table_bar = table & PCI_MSIX_TABLE_BIR;
    msix->table_offset = table & PCI_MSIX_TABLE_OFFSET;
    msix->pba_bar = pba & PCI_MSIX_PBA_BIR;
    msix->pba_offset = pba & PCI_MSIX_PBA_OFFSET;
    auto inside = [&](unsigned bar, std::uint64_t offset, std::uint64_t size) {
        return bar < kBars && bars_[bar].present && offset <= bars_[bar].size && size <= bars_[bar].size - offset;
    };
    if (!inside(msix->table_bar, msix->table_offset, msix->table.table_bytes()) ||
        !inside(msix->pba_bar, msix->pba_offset, msix->table.pba_bytes())) {
        vmm::log_warn("%s: MSI-X table or PBA outside its BAR; MSI-X hidden from the guest", name_.c_str());
        return false;
    }
    if (device_->irq_count(VFIO_PCI_MSIX_IRQ_INDEX) < vectors) {
        vmm::log_warn("%s: the host offers %u MSI-X vectors for a table of %u; MSI-X hidden from the guest",
                      name_.c_str(), device_->irq_count(VFIO_PCI_MSIX_IRQ_INDEX), vectors);
        return false;
    }
    for (unsigned v = 0; v < vectors; ++v) {
        vmm::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd) vmm::throw_errno(name_ + ": eventfd for MSI-X vector " + std::to_string(v));
        msix->eventfds.push_back(std::move(fd));
    }
    msix->routed.resize(vectors);
    // Message Control: enable and function mask are the guest's; table size, BIR and offsets
    // read as the device has them (the layout is the device's, not relocated).
    shadow_.set_u16(cap + PCI_MSIX_FLAGS, msix->table.control());
    shadow_.set_writable(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    shadow_.set_u32(cap + PCI_MSIX_TABLE, table);
    shadow_.set_u32(cap + PCI_MSIX_PBA, pba);
    msix_ = std::move(msix);
    return true;
}

void VfioPciFunction::plan_bars() {
    for (unsigned i = 0; i < kBars; ++i) {
        Bar& bar = bars_[i];
        if (!bar.present) continue;
        const RegionInfo& region = device_->region(VFIO_PCI_BAR0_REGION_INDEX + i);
        std::vector<SparseArea> mappable;
        if (region.mappable()) {
            if (region.has_sparse) mappable = region.sparse;
            else mappable.push_back({0, region.size});
        }
        std::vector<IovaRange> traps;
        if (msix_ && msix_->table_bar == i)
            traps.push_back({msix_->table_offset, msix_->table_offset + msix_->table.table_bytes() - 1});
        if (msix_ && msix_->pba_bar == i)
            traps.push_back({msix_->pba_offset, msix_->pba_offset + msix_->table.pba_bytes() - 1});
        // Only the region's real size can be mmapped (the BAR may be rounded up to 16 bytes).
        bar.plan = plan_bar(std::min(bar.size, region.size), page_size_, mappable, traps);
        if (region.size < bar.size) bar.plan.push_back({region.size, bar.size - region.size, false});
        // mmap each direct piece once; the guest's BAR moves only change where it is placed.
        for (BarPiece& piece : bar.plan) {
            if (!piece.direct) continue;
            std::optional<HostMmap> mapping = device_->map(VFIO_PCI_BAR0_REGION_INDEX + i, piece.offset, piece.size);
            if (!mapping) {
                vmm::log_warn("%s: mmap of BAR%u+0x%" PRIx64 " failed; trapping it instead", name_.c_str(), i,
                              piece.offset);
                piece.direct = false;
                continue;
            }
            bar.areas.push_back({piece.offset, std::move(*mapping)});
        }
        for (const BarPiece& piece : bar.plan) bar.traps.push_back(std::make_unique<TrapPiece>(*this, i, piece.offset));
        bar.direct_handles.resize(bar.plan.size());
        bar.trapped.resize(bar.plan.size());
    }
}

bool VfioPciFunction::is_passthrough(std::uint16_t offset) const {
    return std::any_of(passthrough_.begin(), passthrough_.end(),
                       [&](const Passthrough& p) { return offset >= p.first && offset < p.first + p.size; });
}

}  // namespace devices::vfio
