// devices::pci::BarAllocator: initial BAR placement inside the host bridge's windows, each BAR
// naturally aligned (PCI Local Bus 3.0 6.2.5.1) and at least host-page aligned so that it can be
// given to the guest as a KVM memory slot. The guest may move BARs later; this is only the start.
#pragma once

#include <cstdint>
#include <optional>

#include "vmm/base/address.hpp"

namespace devices::pci {

class BarAllocator {
public:
    BarAllocator(vmm::GuestRange mmio32, vmm::GuestRange mmio64, std::uint64_t page_size)
        : mmio32_(mmio32),
          mmio64_(mmio64),
          next32_(mmio32.base().value),
          next64_(mmio64.base().value),
          page_size_(page_size) {}

    // A guest address for a memory BAR of `size` bytes (a power of two). 64-bit prefetchable BARs
    // go to the 64-bit window, everything else below 4 GiB (Linux puts non-prefetchable BARs in
    // the bridge's non-prefetchable window, which is the 32-bit one). Nothing if it does not fit.
    std::optional<std::uint64_t> allocate(std::uint64_t size, bool is_64bit, bool prefetchable);

private:
    static std::optional<std::uint64_t> take(std::uint64_t& next, vmm::GuestRange window, std::uint64_t size,
                                             std::uint64_t align);
    vmm::GuestRange mmio32_;
    vmm::GuestRange mmio64_;
    std::uint64_t next32_;
    std::uint64_t next64_;
    std::uint64_t page_size_;
};

}  // namespace devices::pci
