// MMIO dispatch. A device sees only offsets inside its own window; the bus delivers an access
// only when all of [addr, addr + size) lies in one device, and answers everything else RAZ/WI.
#pragma once

#include <cstdint>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/address.hpp"
#include "vmm/base/log.hpp"

namespace vmm {

// A device on the MMIO bus. Called from vCPU threads (possibly several at once): implementations
// guard their own state. `data` is 1, 2, 4 or 8 bytes, little-endian.
class MmioDevice {
public:
    virtual ~MmioDevice() = default;
    virtual void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) = 0;
    virtual void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
};

class MmioBus {
public:
    // Registers `device` (not owned; it must outlive the bus's users) at `range`. Throws
    // SetupError on overlap with another device.
    void add(GuestRange range, MmioDevice& device, std::string name);

    // False when no single device claims the whole access (then reads return zeros).
    bool read(GuestPhysAddr addr, std::span<std::uint8_t> data);
    bool write(GuestPhysAddr addr, std::span<const std::uint8_t> data);

private:
    struct Entry {
        GuestRange range;
        MmioDevice* device;
        std::string name;
    };
    const Entry* find(GuestPhysAddr addr, std::uint64_t size) const;

    mutable std::shared_mutex lock_;  // exclusive only while devices are added (at setup)
    std::vector<Entry> entries_;      // sorted by base, non-overlapping
    RateLimiter unclaimed_log_;
};

}  // namespace vmm
