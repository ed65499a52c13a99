#include "devices/pci/msix_table.hpp"

#include <linux/pci_regs.h>

#include "devices/pci/config_space.hpp"

namespace devices::pci {
namespace {

constexpr std::uint32_t kEntryMaskBit = PCI_MSIX_ENTRY_CTRL_MASKBIT;
// Vector Control bits 31:1 are reserved (RsvdP): keep them zero whatever the guest writes.
constexpr std::uint32_t kEntryControlWritable = kEntryMaskBit;

}  // namespace

MsixTable::MsixTable(unsigned vectors) : entries_(vectors == 0 || vectors > kMaxVectors ? 1 : vectors) {}

std::uint16_t MsixTable::control() const {
    std::uint16_t value = static_cast<std::uint16_t>((entries_.size() - 1) & PCI_MSIX_FLAGS_QSIZE);
    if (enabled_) value |= PCI_MSIX_FLAGS_ENABLE;
    if (function_masked_) value |= PCI_MSIX_FLAGS_MASKALL;
    return value;
}

bool MsixTable::write_control(std::uint16_t value) {
    const bool was_enabled = enabled_;
    enabled_ = (value & PCI_MSIX_FLAGS_ENABLE) != 0;
    function_masked_ = (value & PCI_MSIX_FLAGS_MASKALL) != 0;
    return enabled_ != was_enabled;
}

bool MsixTable::valid_access(std::uint64_t offset, std::size_t size, std::size_t limit) {
    return (size == 4 || size == 8) && offset % size == 0 && offset < limit && size <= limit - offset;
}

std::uint32_t MsixTable::dword(std::uint64_t offset) const {
    const Entry& e = entries_[offset / kEntrySize];
    switch (offset % kEntrySize) {
        case PCI_MSIX_ENTRY_LOWER_ADDR: return e.address_lo;
        case PCI_MSIX_ENTRY_UPPER_ADDR: return e.address_hi;
        case PCI_MSIX_ENTRY_DATA: return e.data;
        default: return e.control;
    }
}

bool MsixTable::read_table(std::uint64_t offset, std::span<std::uint8_t> data) const {
    if (!valid_access(offset, data.size(), table_bytes())) return false;
    std::uint64_t value = dword(offset);
    if (data.size() == 8) value |= std::uint64_t{dword(offset + 4)} << 32;
    store_le(data, value);
    return true;
}

bool MsixTable::write_table(std::uint64_t offset, std::span<const std::uint8_t> data,
                            std::optional<unsigned>& changed) {
    changed.reset();
    if (!valid_access(offset, data.size(), table_bytes())) return false;
    const std::uint64_t value = load_le(data);
    for (std::size_t part = 0; part < data.size() / 4; ++part) {
        const std::uint64_t at = offset + 4 * part;
        const auto v = static_cast<std::uint32_t>(value >> (32 * part));
        Entry& e = entries_[at / kEntrySize];
        const Entry before = e;
        switch (at % kEntrySize) {
            // The address is DWORD aligned (6.8.2.4): the low two bits are read-only zero.
            case PCI_MSIX_ENTRY_LOWER_ADDR: e.address_lo = v & ~std::uint32_t{3}; break;
            case PCI_MSIX_ENTRY_UPPER_ADDR: e.address_hi = v; break;
            case PCI_MSIX_ENTRY_DATA: e.data = v; break;
            default: e.control = v & kEntryControlWritable; break;
        }
        if (e.address_lo != before.address_lo || e.address_hi != before.address_hi || e.data != before.data ||
            e.control != before.control)
            changed = static_cast<unsigned>(at / kEntrySize);
    }
    return true;
}

bool MsixTable::read_pba(std::uint64_t offset, std::span<std::uint8_t> data,
                         const std::function<bool(unsigned)>& pending) const {
    if (!valid_access(offset, data.size(), pba_bytes())) return false;
    std::uint64_t value = 0;
    for (unsigned bit = 0; bit < 8 * data.size(); ++bit) {
        const std::uint64_t vector = offset * 8 + bit;
        if (vector < entries_.size() && pending && pending(static_cast<unsigned>(vector)))
            value |= std::uint64_t{1} << bit;
    }
    store_le(data, value);
    return true;
}

MsiMessage MsixTable::message(unsigned vector) const {
    const Entry& e = entries_.at(vector);
    return {(std::uint64_t{e.address_hi} << 32) | e.address_lo, e.data};
}

bool MsixTable::vector_masked(unsigned vector) const { return (entries_.at(vector).control & kEntryMaskBit) != 0; }

bool MsixTable::deliverable(unsigned vector) const { return enabled_ && !function_masked_ && !vector_masked(vector); }

void MsixTable::reset() {
    for (Entry& e : entries_) e = Entry{};
    enabled_ = false;
    function_masked_ = false;
}

}  // namespace devices::pci
