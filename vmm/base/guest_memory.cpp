#include "vmm/base/guest_memory.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

#include "vmm/base/error.hpp"

namespace vmm {

MmapRegion MmapRegion::anonymous(std::size_t size) {
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) throw_errno("cannot allocate " + std::to_string(size >> 20) + " MiB of guest memory");
    return MmapRegion(base, size);
}

GuestMemory::GuestMemory(std::span<const GuestRange> ranges) {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    std::vector<GuestRange> sorted(ranges.begin(), ranges.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const GuestRange& a, const GuestRange& b) { return a.base() < b.base(); });
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        const GuestRange& r = sorted[i];
        if (!is_aligned(r.base().value, page) || !is_aligned(r.size(), page))
            throw SetupError("guest memory region is not page-aligned");
        if (i > 0 && sorted[i - 1].overlaps(r)) throw SetupError("guest memory regions overlap");
        backing_.push_back(MmapRegion::anonymous(r.size()));
        regions_.push_back({r, backing_.back().data()});
    }
}

std::uint64_t GuestMemory::total_size() const {
    std::uint64_t total = 0;
    for (const Region& r : regions_) total += r.range.size();
    return total;
}

std::uint8_t* GuestMemory::host_pointer(GuestPhysAddr addr, std::uint64_t length) const {
    auto wanted = GuestRange::make(addr, length);
    if (!wanted) return nullptr;
    for (const Region& r : regions_) {
        if (r.range.contains(*wanted)) return r.host + (addr.value - r.range.base().value);
    }
    return nullptr;
}

bool GuestMemory::read(GuestPhysAddr addr, std::span<std::uint8_t> out) const {
    if (out.empty()) return true;
    const std::uint8_t* src = host_pointer(addr, out.size());
    if (!src) return false;
    std::memcpy(out.data(), src, out.size());
    return true;
}

bool GuestMemory::write(GuestPhysAddr addr, std::span<const std::uint8_t> in) const {
    if (in.empty()) return true;
    std::uint8_t* dst = host_pointer(addr, in.size());
    if (!dst) return false;
    std::memcpy(dst, in.data(), in.size());
    return true;
}

}  // namespace vmm
