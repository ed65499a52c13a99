// devices::pci::ConfigSpace: a function's emulated configuration space (PCI Local Bus 3.0 ch. 6,
// PCIe 4.0 7.5) as bytes with per-byte write and write-1-to-clear masks, plus the access rule
// every config access is checked against once, at the host bridge.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace devices::pci {

// PCIe configuration space per function (the first 256 bytes are the PCI-compatible part).
inline constexpr std::size_t kConfigSize = 4096;
inline constexpr std::size_t kLegacyConfigSize = 256;

// A config access the guest may make: 1, 2 or 4 bytes, naturally aligned, inside the space.
// Anything else is answered RAZ/WI by the caller.
constexpr bool valid_config_access(std::uint64_t offset, std::size_t size) {
    return (size == 1 || size == 2 || size == 4) && offset < kConfigSize && offset % size == 0 &&
           offset + size <= kConfigSize;
}

// Little-endian helpers over byte spans of 1..8 bytes (config and MMIO data).
std::uint64_t load_le(std::span<const std::uint8_t> bytes);
void store_le(std::span<std::uint8_t> bytes, std::uint64_t value);

// Not thread-safe: the owning function serialises access.
class ConfigSpace {
public:
    ConfigSpace() {
        bytes_.fill(0);
        write_mask_.fill(0);
    }

    // ---- VMM side: set contents and masks (ignores masks)
    void set_u8(std::size_t offset, std::uint8_t value) { bytes_.at(offset) = value; }
    void set_u16(std::size_t offset, std::uint16_t value) { set(offset, 2, value); }
    void set_u32(std::size_t offset, std::uint32_t value) { set(offset, 4, value); }
    void set(std::size_t offset, std::size_t size, std::uint64_t value);
    // Bits set in `mask` (little-endian over `size` bytes) become guest-writable.
    void set_writable(std::size_t offset, std::size_t size, std::uint64_t mask);

    std::uint8_t u8(std::size_t offset) const { return bytes_.at(offset); }
    std::uint16_t u16(std::size_t offset) const { return static_cast<std::uint16_t>(get(offset, 2)); }
    std::uint32_t u32(std::size_t offset) const { return static_cast<std::uint32_t>(get(offset, 4)); }
    std::uint64_t get(std::size_t offset, std::size_t size) const;

    // ---- guest side (the caller checked valid_config_access)
    void read(std::size_t offset, std::span<std::uint8_t> data) const;
    // Applies the masks: writable bits take the new value, W1C bits written as 1 clear,
    // everything else keeps its value.
    void write(std::size_t offset, std::span<const std::uint8_t> data);

private:
    std::array<std::uint8_t, kConfigSize> bytes_;
    std::array<std::uint8_t, kConfigSize> write_mask_;
};

}  // namespace devices::pci
