#include "devices/pci/bar_windows.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstring>

namespace devices::pci {

BarWindows::BarWindows(std::vector<vmm::GuestRange> windows, DirectMapper* direct) : direct_(direct) {
    for (const vmm::GuestRange& r : windows) windows_.push_back(std::make_unique<Window>(*this, r));
}

bool BarWindows::fits(vmm::GuestRange range) const {
    const bool inside =
        std::any_of(windows_.begin(), windows_.end(), [&](const auto& w) { return w->range.contains(range); });
    if (!inside) return false;
    return std::none_of(pieces_.begin(), pieces_.end(), [&](const Piece& p) { return p.range.overlaps(range); });
}

bool BarWindows::add_trap(vmm::GuestRange range, vmm::MmioDevice& device) {
    std::unique_lock lock(lock_);
    if (!fits(range)) {
        vmm::guest_error(log_,
                         "pci: BAR piece 0x%" PRIx64 "+0x%" PRIx64
                         " is outside the PCI windows or overlaps another; left unmapped",
                         range.base().value, range.size());
        return false;
    }
    pieces_.push_back({range, &device, 0});
    return true;
}

std::optional<std::uint32_t> BarWindows::add_direct(vmm::GuestRange range, void* host) {
    std::unique_lock lock(lock_);
    if (!direct_) return std::nullopt;
    if (!fits(range)) {
        vmm::guest_error(log_,
                         "pci: BAR piece 0x%" PRIx64 "+0x%" PRIx64
                         " is outside the PCI windows or overlaps another; left unmapped",
                         range.base().value, range.size());
        return std::nullopt;
    }
    std::optional<std::uint32_t> handle = direct_->map(range, host);
    if (handle) pieces_.push_back({range, nullptr, *handle});
    return handle;
}

void BarWindows::remove_trap(vmm::MmioDevice& device) {
    std::unique_lock lock(lock_);
    std::erase_if(pieces_, [&](const Piece& p) { return p.trap == &device; });
}

void BarWindows::remove_direct(std::uint32_t handle) {
    std::unique_lock lock(lock_);
    auto it =
        std::find_if(pieces_.begin(), pieces_.end(), [&](const Piece& p) { return !p.trap && p.handle == handle; });
    if (it == pieces_.end()) return;
    pieces_.erase(it);
    if (direct_) direct_->unmap(handle);
}

std::size_t BarWindows::trap_count() const {
    std::shared_lock lock(lock_);
    return static_cast<std::size_t>(
        std::count_if(pieces_.begin(), pieces_.end(), [](const Piece& p) { return p.trap; }));
}

std::size_t BarWindows::direct_count() const {
    std::shared_lock lock(lock_);
    return static_cast<std::size_t>(
        std::count_if(pieces_.begin(), pieces_.end(), [](const Piece& p) { return !p.trap; }));
}

vmm::MmioDevice* BarWindows::find_trap(std::uint64_t addr, std::size_t size, std::uint64_t& offset) const {
    auto access = vmm::GuestRange::make(vmm::GuestPhysAddr{addr}, size);
    if (!access) return nullptr;
    std::shared_lock lock(lock_);
    for (const Piece& p : pieces_) {
        if (p.trap && p.range.contains(*access)) {
            offset = addr - p.range.base().value;
            return p.trap;
        }
    }
    return nullptr;
}

void BarWindows::Window::mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::uint64_t inner = 0;
    if (vmm::MmioDevice* device = windows.find_trap(range.base().value + offset, data.size(), inner)) {
        device->mmio_read(inner, data);
        return;
    }
    // No BAR there (or an access straddling two pieces): RAZ, as on a bus nobody claims.
    std::memset(data.data(), 0, data.size());
    vmm::guest_error(windows.log_, "pci: read of %zu bytes at 0x%" PRIx64 " hits no BAR", data.size(),
                     range.base().value + offset);
}

void BarWindows::Window::mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    std::uint64_t inner = 0;
    if (vmm::MmioDevice* device = windows.find_trap(range.base().value + offset, data.size(), inner)) {
        device->mmio_write(inner, data);
        return;
    }
    vmm::guest_error(windows.log_, "pci: write of %zu bytes at 0x%" PRIx64 " hits no BAR", data.size(),
                     range.base().value + offset);
}

}  // namespace devices::pci
