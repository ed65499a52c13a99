#include "devices/pci/config_space.hpp"

namespace devices::pci {

std::uint64_t load_le(std::span<const std::uint8_t> bytes) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < bytes.size() && i < 8; ++i) value |= std::uint64_t{bytes[i]} << (8 * i);
    return value;
}

void store_le(std::span<std::uint8_t> bytes, std::uint64_t value) {
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = i < 8 ? static_cast<std::uint8_t>(value >> (8 * i)) : 0;
}

void ConfigSpace::set(std::size_t offset, std::size_t size, std::uint64_t value) {
    for (std::size_t i = 0; i < size; ++i) bytes_.at(offset + i) = static_cast<std::uint8_t>(value >> (8 * i));
}

void ConfigSpace::set_writable(std::size_t offset, std::size_t size, std::uint64_t mask) {
    for (std::size_t i = 0; i < size; ++i) write_mask_.at(offset + i) = static_cast<std::uint8_t>(mask >> (8 * i));
}

std::uint64_t ConfigSpace::get(std::size_t offset, std::size_t size) const {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < size; ++i) value |= std::uint64_t{bytes_.at(offset + i)} << (8 * i);
    return value;
}

void ConfigSpace::read(std::size_t offset, std::span<std::uint8_t> data) const {
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = offset + i < kConfigSize ? bytes_[offset + i] : 0;
}

void ConfigSpace::write(std::size_t offset, std::span<const std::uint8_t> data) {
    for (std::size_t i = 0; i < data.size() && offset + i < kConfigSize; ++i) {
        const std::size_t at = offset + i;
        const std::uint8_t writable = write_mask_[at];
        bytes_[at] = static_cast<std::uint8_t>((bytes_[at] & ~writable) | (data[i] & writable));
    }
}

}  // namespace devices::pci
