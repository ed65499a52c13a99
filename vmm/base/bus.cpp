#include "vmm/base/bus.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <mutex>

#include "vmm/base/error.hpp"

namespace vmm {

void MmioBus::add(GuestRange range, MmioDevice& device, std::string name) {
    std::unique_lock guard(lock_);
    for (const Entry& e : entries_) {
        if (e.range.overlaps(range)) throw SetupError("MMIO window of " + name + " overlaps " + e.name);
    }
    auto at = std::lower_bound(entries_.begin(), entries_.end(), range.base(),
                               [](const Entry& e, GuestPhysAddr base) { return e.range.base() < base; });
    entries_.insert(at, Entry{range, &device, std::move(name)});
}

const MmioBus::Entry* MmioBus::find(GuestPhysAddr addr, std::uint64_t size) const {
    auto access = GuestRange::make(addr, size);
    if (!access) return nullptr;
    // First entry whose base is above addr; the candidate is the one before it.
    auto after = std::upper_bound(entries_.begin(), entries_.end(), addr,
                                  [](GuestPhysAddr a, const Entry& e) { return a < e.range.base(); });
    if (after == entries_.begin()) return nullptr;
    const Entry& candidate = *std::prev(after);
    return candidate.range.contains(*access) ? &candidate : nullptr;
}

bool MmioBus::read(GuestPhysAddr addr, std::span<std::uint8_t> data) {
    std::shared_lock guard(lock_);
    if (const Entry* e = find(addr, data.size())) {
        e->device->mmio_read(addr.value - e->range.base().value, data);
        return true;
    }
    std::memset(data.data(), 0, data.size());
    guest_error(unclaimed_log_, "read of %zu bytes at unclaimed address 0x%" PRIx64, data.size(), addr.value);
    return false;
}

bool MmioBus::write(GuestPhysAddr addr, std::span<const std::uint8_t> data) {
    std::shared_lock guard(lock_);
    if (const Entry* e = find(addr, data.size())) {
        e->device->mmio_write(addr.value - e->range.base().value, data);
        return true;
    }
    guest_error(unclaimed_log_, "write of %zu bytes at unclaimed address 0x%" PRIx64, data.size(), addr.value);
    return false;
}

}  // namespace vmm
