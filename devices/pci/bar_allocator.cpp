#include "devices/pci/bar_allocator.hpp"

#include <bit>

namespace devices::pci {

std::optional<std::uint64_t> BarAllocator::take(std::uint64_t& next, vmm::GuestRange window, std::uint64_t size,
                                                std::uint64_t align) {
    auto base = vmm::checked_add(next, align - 1);
    if (!base) return std::nullopt;
    const std::uint64_t at = *base & ~(align - 1);
    auto end = vmm::checked_add(at, size);
    if (!end || at < window.base().value || *end - 1 > window.last()) return std::nullopt;
    next = *end;
    return at;
}

std::optional<std::uint64_t> BarAllocator::allocate(std::uint64_t size, bool is_64bit, bool prefetchable) {
    if (size == 0 || !std::has_single_bit(size)) return std::nullopt;
    const std::uint64_t align = size > page_size_ ? size : page_size_;
    if (is_64bit && prefetchable) {
        if (auto at = take(next64_, mmio64_, size, align)) return at;
    }
    return take(next32_, mmio32_, size, align);
}

}  // namespace devices::pci
