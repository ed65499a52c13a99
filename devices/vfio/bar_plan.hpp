// How one BAR of an assigned function reaches the guest: which parts are given to it directly
// (mmapped from the VFIO device, a KVM memory slot: no exits) and which are trapped (MSI-X table
// and PBA pages, parts the host will not let us mmap, BARs smaller than a page). Trapping only the
// MSI-X pages keeps the registers that share the BAR direct, which is the layout of QEMU's default
// NVMe and of many real devices (the rig's emulated NVMe shows both layouts:
// tests/rig/vfio-exclusive-bar.test.sh).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "devices/vfio/container.hpp"
#include "devices/vfio/vfio_device.hpp"

namespace devices::vfio {

struct BarPiece {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    bool direct = false;
    friend bool operator==(const BarPiece&, const BarPiece&) = default;
};

// Pieces covering [0, bar_size) in order, adjacent pieces of one kind merged. `mappable` are
// the parts the host lets us mmap (the sparse areas, or the whole BAR); `traps` must be trapped
// whatever they hold (byte ranges; widened here to whole pages). Direct pieces are page-aligned.
std::vector<BarPiece> plan_bar(std::uint64_t bar_size, std::uint64_t page_size, std::span<const SparseArea> mappable,
                               std::span<const IovaRange> traps);

}  // namespace devices::vfio
