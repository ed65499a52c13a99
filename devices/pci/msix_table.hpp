// devices::pci::MsixTable: an emulated MSI-X table, Pending Bit Array and the capability's
// Message Control state (PCI Local Bus 3.0 section 6.8.2). The owner turns vector changes into
// interrupt routes; this class only keeps the guest-visible state and its access rules.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

namespace devices::pci {

// An MSI as the guest programmed it: the doorbell address and the payload.
struct MsiMessage {
    std::uint64_t address = 0;
    std::uint32_t data = 0;
    friend bool operator==(const MsiMessage&, const MsiMessage&) = default;
};

// Not thread-safe: the owning function serialises access.
class MsixTable {
public:
    static constexpr unsigned kMaxVectors = 2048;  // Table Size is 11 bits (N - 1)
    static constexpr std::size_t kEntrySize = 16;

    // `vectors` in 1..kMaxVectors (the caller checked what the device reported).
    explicit MsixTable(unsigned vectors);

    unsigned vectors() const { return static_cast<unsigned>(entries_.size()); }
    std::size_t table_bytes() const { return entries_.size() * kEntrySize; }
    // The PBA is an array of QWORDs (6.8.2.10).
    std::size_t pba_bytes() const { return (entries_.size() + 63) / 64 * 8; }

    // ---- Message Control (capability offset 2): enable (bit 15), function mask (bit 14), size
    std::uint16_t control() const;
    bool enabled() const { return enabled_; }
    // Returns true when `enabled()` changed (the owner then enables or disables host vectors).
    bool write_control(std::uint16_t value);

    // ---- the table and PBA, at offsets inside each structure
    // Allowed: aligned DWORD accesses, and aligned QWORD accesses (6.8.2: software may use
    // either). Anything else returns false; the caller answers RAZ/WI and logs.
    bool read_table(std::uint64_t offset, std::span<std::uint8_t> data) const;
    // `changed` is set to the vector whose message or mask bit changed.
    bool write_table(std::uint64_t offset, std::span<const std::uint8_t> data, std::optional<unsigned>& changed);
    // The PBA is read-only; `pending(v)` says whether masked vector v has an interrupt waiting.
    bool read_pba(std::uint64_t offset, std::span<std::uint8_t> data,
                  const std::function<bool(unsigned)>& pending) const;

    MsiMessage message(unsigned vector) const;
    bool vector_masked(unsigned vector) const;
    // Enabled, not function-masked, and the vector itself unmasked: interrupts may be delivered.
    bool deliverable(unsigned vector) const;

    // Power-on state: MSI-X disabled, every vector masked, messages zero (6.8.2.9).
    void reset();

private:
    struct Entry {
        std::uint32_t address_lo = 0;
        std::uint32_t address_hi = 0;
        std::uint32_t data = 0;
        std::uint32_t control = 1;  // Mask Bit set at reset
    };
    static bool valid_access(std::uint64_t offset, std::size_t size, std::size_t limit);
    std::uint32_t dword(std::uint64_t offset) const;

    std::vector<Entry> entries_;
    bool enabled_ = false;
    bool function_masked_ = false;
};

}  // namespace devices::pci
