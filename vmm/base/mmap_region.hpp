// Move-only owner of an mmap()ed host range (guest RAM, an mmapped VFIO BAR, ...).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace vmm {

class MmapRegion {
public:
    MmapRegion() = default;
    MmapRegion(void* base, std::size_t size) : base_(static_cast<std::uint8_t*>(base)), size_(size) {}
    MmapRegion(MmapRegion&& other) noexcept
        : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    MmapRegion& operator=(MmapRegion&& other) noexcept {
        if (this != &other) {
            reset();
            base_ = std::exchange(other.base_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    MmapRegion(const MmapRegion&) = delete;
    MmapRegion& operator=(const MmapRegion&) = delete;
    ~MmapRegion() { reset(); }

    // Private anonymous memory, not backed by swap reservation (guest RAM is touched lazily).
    // Throws SetupError when the host refuses.
    static MmapRegion anonymous(std::size_t size);

    std::uint8_t* data() const { return base_; }
    std::size_t size() const { return size_; }
    explicit operator bool() const { return base_ != nullptr; }

private:
    void reset() {
        if (base_) ::munmap(base_, size_);
        base_ = nullptr;
        size_ = 0;
    }
    std::uint8_t* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace vmm
