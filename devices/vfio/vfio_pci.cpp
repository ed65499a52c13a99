// VfioPciFunction at run time: config accesses, BAR decoding, trapped BAR accesses (MSI-X table
// and PBA emulated, everything else forwarded to the device) and MSI-X routing.
#include "devices/vfio/vfio_pci.hpp"

#include <linux/pci_regs.h>
#include <poll.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

namespace devices::vfio {
namespace {

constexpr std::uint16_t kForwardedCommand = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
constexpr std::size_t kBarRegistersEnd = PCI_BASE_ADDRESS_5 + 4;

bool overlaps(std::size_t offset, std::size_t size, std::size_t first, std::size_t end) {
    return offset < end && first < offset + size;
}

}  // namespace

VfioPciFunction::~VfioPciFunction() { stop(); }

void VfioPciFunction::stop() {
    std::lock_guard guard(lock_);
    if (stopped_) return;
    stopped_ = true;
    shut_down();
}

void VfioPciFunction::shut_down() {
    if (msix_) {
        for (unsigned v = 0; v < msix_->table.vectors(); ++v)
            if (msix_->routed[v]) env_.msi.unroute(msix_->eventfds[v].get());
        if (msix_->host_enabled) device_->disable_irqs(VFIO_PCI_MSIX_IRQ_INDEX);
        msix_->host_enabled = false;
    }
    for (unsigned i = 0; i < kBars; ++i) undecode_bar(i);
    if (env_.dma && has_address_) env_.dma->set_bus_master(bdf_.rid(), false);
    // Stop the device before its fd closes: decode and DMA off, then a reset (the next user,
    // or the host driver, gets it clean; a guest reboot builds a new function and resets again).
    shadow_.set_u16(PCI_COMMAND, 0);
    forward_command();
    device_->reset();
}

void VfioPciFunction::set_address(pci::Bdf bdf) {
    std::lock_guard guard(lock_);
    bdf_ = bdf;
    has_address_ = true;
}

VfioPciStats VfioPciFunction::stats() const {
    std::lock_guard guard(lock_);
    return stats_;
}

unsigned VfioPciFunction::msix_vectors() const {
    std::lock_guard guard(lock_);
    return msix_ ? msix_->table.vectors() : 0;
}

std::string VfioPciFunction::describe() const {
    std::lock_guard guard(lock_);
    std::string text;
    for (unsigned i = 0; i < kBars; ++i) {
        const Bar& bar = bars_[i];
        if (!bar.present) continue;
        char line[160];
        std::snprintf(line, sizeof line, "%s BAR%u: %" PRIu64 " KiB%s%s at 0x%" PRIx64 ":", name_.c_str(), i,
                      bar.size >> 10, bar.is_64bit ? ", 64-bit" : "", bar.prefetchable ? ", prefetchable" : "",
                      bar_address(i).value_or(0));
        text += line;
        for (const BarPiece& p : bar.plan) {
            std::snprintf(line, sizeof line, " %s 0x%" PRIx64 "-0x%" PRIx64, p.direct ? "direct" : "trap", p.offset,
                          p.offset + p.size - 1);
            text += line;
        }
        text += "\n";
    }
    return text;
}

// ---- config space --------------------------------------------------------------------------------

// Splits [offset, offset + size) into runs of bytes with one owner (passed through to the device, or
// kept in the shadow) and calls fn(config offset, index into the access, length, passthrough) per run.
template <typename Fn>
void VfioPciFunction::for_each_owner_run(std::uint16_t offset, std::size_t size, Fn&& fn) const {
    for (std::size_t i = 0; i < size;) {
        const auto at = static_cast<std::uint16_t>(offset + i);
        const bool pass = is_passthrough(at);
        std::size_t n = 1;
        while (i + n < size && is_passthrough(static_cast<std::uint16_t>(at + n)) == pass) ++n;
        fn(at, i, n, pass);
        i += n;
    }
}

void VfioPciFunction::config_read(std::uint16_t offset, std::span<std::uint8_t> data) {
    std::lock_guard guard(lock_);
    for_each_owner_run(offset, data.size(), [&](std::uint16_t at, std::size_t from, std::size_t n, bool pass) {
        auto run = data.subspan(from, n);
        if (!pass) return shadow_.read(at, run);
        if (!device_->read(VFIO_PCI_CONFIG_REGION_INDEX, at, run)) std::fill(run.begin(), run.end(), 0);
    });
}

void VfioPciFunction::config_write(std::uint16_t offset, std::span<const std::uint8_t> data) {
    std::lock_guard guard(lock_);
    const std::uint16_t command_before = shadow_.u16(PCI_COMMAND);
    for_each_owner_run(offset, data.size(), [&](std::uint16_t at, std::size_t from, std::size_t n, bool pass) {
        auto run = data.subspan(from, n);
        if (!pass) return shadow_.write(at, run);
        if (!device_->write(VFIO_PCI_CONFIG_REGION_INDEX, at, run)) ++stats_.bad_accesses;
    });
    if (overlaps(offset, data.size(), PCI_COMMAND, PCI_COMMAND + 2)) command_changed(command_before);
    if (overlaps(offset, data.size(), PCI_BASE_ADDRESS_0, kBarRegistersEnd)) bars_changed();
    if (msix_ && overlaps(offset, data.size(), msix_->cap + PCI_MSIX_FLAGS, msix_->cap + PCI_MSIX_FLAGS + 2u))
        msix_control_changed();
}

void VfioPciFunction::forward_command() {
    // The device decodes and masters as the guest says; INTx stays disabled (not exposed) and
    // I/O decoding off (no I/O BARs exposed); other bits keep the host's value.
    const std::uint16_t guest = shadow_.u16(PCI_COMMAND);
    const std::uint16_t value = static_cast<std::uint16_t>((host_command_ & ~(kForwardedCommand | PCI_COMMAND_IO)) |
                                                           (guest & kForwardedCommand) | PCI_COMMAND_INTX_DISABLE);
    std::uint8_t bytes[2];
    pci::store_le(bytes, value);
    if (!device_->write(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, bytes))
        vmm::log_warn("%s: cannot write the device's command register", name_.c_str());
}

void VfioPciFunction::command_changed(std::uint16_t before) {
    const std::uint16_t now = shadow_.u16(PCI_COMMAND);
    const bool memory = now & PCI_COMMAND_MEMORY, was_memory = before & PCI_COMMAND_MEMORY;
    const bool master = now & PCI_COMMAND_MASTER, was_master = before & PCI_COMMAND_MASTER;
    // Order: whatever the device will need exists before it is enabled, and goes only after it
    // is disabled (vfio-pci also revokes BAR mmaps while memory decode is off).
    if (master && !was_master && env_.dma && has_address_) env_.dma->set_bus_master(bdf_.rid(), true);
    if (!memory && was_memory)
        for (unsigned i = 0; i < kBars; ++i) undecode_bar(i);
    forward_command();
    if (memory && !was_memory)
        for (unsigned i = 0; i < kBars; ++i) decode_bar(i);
    if (!master && was_master && env_.dma && has_address_) env_.dma->set_bus_master(bdf_.rid(), false);
}

std::optional<std::uint64_t> VfioPciFunction::bar_address(unsigned index) const {
    const Bar& bar = bars_[index];
    if (!bar.present) return std::nullopt;
    std::uint64_t address = shadow_.u32(PCI_BASE_ADDRESS_0 + 4 * index) & PCI_BASE_ADDRESS_MEM_MASK & 0xffffffffu;
    if (bar.is_64bit) address |= std::uint64_t{shadow_.u32(PCI_BASE_ADDRESS_0 + 4 * (index + 1))} << 32;
    return address;
}

void VfioPciFunction::decode_bar(unsigned index) {
    Bar& bar = bars_[index];
    auto base = bar_address(index);
    if (!base || bar.decoded_at) return;
    bar.decoded_at = *base;
    for (std::size_t p = 0; p < bar.plan.size(); ++p) {
        const BarPiece& piece = bar.plan[p];
        auto start = vmm::checked_add(*base, piece.offset);
        auto range = start ? vmm::GuestRange::make(vmm::GuestPhysAddr{*start}, piece.size) : std::nullopt;
        if (!range) continue;  // wraps: left unmapped (RAZ/WI)
        if (piece.direct && vmm::is_aligned(*start, page_size_)) {
            auto area = std::find_if(bar.areas.begin(), bar.areas.end(),
                                     [&](const AreaMapping& a) { return a.offset == piece.offset; });
            if (area != bar.areas.end()) {
                bar.direct_handles[p] = env_.bars.add_direct(*range, area->mapping.data());
                if (bar.direct_handles[p]) continue;
            }
        }
        // Trapped by design, or a direct piece the guest placed off a page boundary.
        bar.trapped[p] = env_.bars.add_trap(*range, *bar.traps[p]);
    }
}

void VfioPciFunction::undecode_bar(unsigned index) {
    Bar& bar = bars_[index];
    if (!bar.decoded_at) return;
    for (std::size_t p = 0; p < bar.plan.size(); ++p) {
        if (bar.direct_handles[p]) env_.bars.remove_direct(*bar.direct_handles[p]);
        if (bar.trapped[p]) env_.bars.remove_trap(*bar.traps[p]);
        bar.direct_handles[p].reset();
        bar.trapped[p] = false;
    }
    bar.decoded_at.reset();
}

void VfioPciFunction::bars_changed() {
    if (!(shadow_.u16(PCI_COMMAND) & PCI_COMMAND_MEMORY)) return;
    for (unsigned i = 0; i < kBars; ++i) {
        const Bar& bar = bars_[i];
        if (!bar.present || bar.decoded_at == bar_address(i)) continue;
        undecode_bar(i);
        decode_bar(i);
    }
}

// ---- MSI-X -----------------------------------------------------------------------------------------

void VfioPciFunction::msix_control_changed() {
    Msix& m = *msix_;
    const std::uint16_t written = shadow_.u16(m.cap + PCI_MSIX_FLAGS);
    if (m.table.write_control(written)) {
        if (m.table.enabled()) {
            // Every vector gets its eventfd at once; which ones reach the guest is decided by
            // the routes (masked vectors are simply not routed).
            std::vector<std::int32_t> fds;
            for (const vmm::UniqueFd& fd : m.eventfds) fds.push_back(fd.get());
            const int r = device_->enable_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds);
            m.host_enabled = r == 0;
            if (r != 0)
                vmm::log_warn("%s: VFIO_DEVICE_SET_IRQS(MSI-X, %zu vectors) failed: %s", name_.c_str(), fds.size(),
                              std::strerror(-r));
        } else {
            device_->disable_irqs(VFIO_PCI_MSIX_IRQ_INDEX);
            m.host_enabled = false;
        }
    }
    shadow_.set_u16(m.cap + PCI_MSIX_FLAGS, m.table.control());
    for (unsigned v = 0; v < m.table.vectors(); ++v) update_vector(v);
}

void VfioPciFunction::update_vector(unsigned vector) {
    Msix& m = *msix_;
    const int fd = m.eventfds[vector].get();
    if (m.host_enabled && m.table.deliverable(vector) && has_address_) {
        const pci::MsiMessage message = m.table.message(vector);
        if (m.routed[vector] == message) return;
        if (env_.msi.route(fd, bdf_.rid(), message)) {
            m.routed[vector] = message;
            ++stats_.routes;
        } else {
            // Refused (e.g. an address that is no ITS doorbell): signals wait in the eventfd.
            if (m.routed[vector]) env_.msi.unroute(fd);
            m.routed[vector].reset();
            ++stats_.route_failures;
        }
        return;
    }
    if (m.routed[vector]) {
        env_.msi.unroute(fd);
        m.routed[vector].reset();
        ++stats_.unroutes;
    }
}

bool VfioPciFunction::vector_pending(unsigned vector) const {
    // An unrouted vector's interrupts accumulate in its eventfd (see MsiRouter::unroute).
    if (!msix_ || msix_->routed[vector]) return false;
    pollfd p{msix_->eventfds[vector].get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

// ---- trapped BAR accesses --------------------------------------------------------------------------

void VfioPciFunction::TrapPiece::mmio_read(std::uint64_t at, std::span<std::uint8_t> data) {
    std::lock_guard guard(function.lock_);
    function.bar_access(bar, offset + at, data, {});
}

void VfioPciFunction::TrapPiece::mmio_write(std::uint64_t at, std::span<const std::uint8_t> data) {
    std::lock_guard guard(function.lock_);
    function.bar_access(bar, offset + at, {}, data);
}

void VfioPciFunction::bar_access(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> read,
                                 std::span<const std::uint8_t> write) {
    const bool is_read = !read.empty();
    const std::size_t size = is_read ? read.size() : write.size();
    if (is_read) ++stats_.trapped_reads;
    else ++stats_.trapped_writes;
    auto hits = [&](unsigned structure_bar, std::uint64_t first, std::uint64_t bytes) {
        return structure_bar == bar && overlaps(offset, size, first, first + bytes);
    };
    bool ok = true;
    if (msix_ && hits(msix_->table_bar, msix_->table_offset, msix_->table.table_bytes())) {
        ++stats_.msix_accesses;
        const std::uint64_t at = offset - std::min(offset, msix_->table_offset);
        if (offset < msix_->table_offset) ok = false;  // straddles the table's start
        else if (is_read) ok = msix_->table.read_table(at, read);
        else {
            std::optional<unsigned> changed;
            ok = msix_->table.write_table(at, write, changed);
            if (changed) update_vector(*changed);
        }
    } else if (msix_ && hits(msix_->pba_bar, msix_->pba_offset, msix_->table.pba_bytes())) {
        ++stats_.msix_accesses;
        // The PBA is read-only (6.8.2.10): writes are ignored.
        if (offset < msix_->pba_offset) ok = false;
        else if (is_read)
            ok = msix_->table.read_pba(offset - msix_->pba_offset, read,
                                       [this](unsigned v) { return vector_pending(v); });
    } else if (is_read) {
        ok = device_->read(VFIO_PCI_BAR0_REGION_INDEX + bar, offset, read);
    } else {
        ok = device_->write(VFIO_PCI_BAR0_REGION_INDEX + bar, offset, write);
    }
    if (ok) return;
    if (is_read) std::fill(read.begin(), read.end(), 0);
    ++stats_.bad_accesses;
    vmm::guest_error(log_, "%s: %s of %zu bytes at BAR%u+0x%" PRIx64 " refused (RAZ/WI)", name_.c_str(),
                     is_read ? "read" : "write", size, bar, offset);
}

}  // namespace devices::vfio
