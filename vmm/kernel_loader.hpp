// arm64 Linux boot: the Image header, where kernel, initrd and DTB go in guest RAM, and loading
// files straight into guest memory. Documentation/arch/arm64/booting.rst.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "vmm/base/address.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vmm {

// The 64-byte header at the start of an arm64 Image (booting.rst section 4).
struct ImageHeader {
    static constexpr std::size_t kSize = 64;
    static constexpr std::uint64_t kDefaultTextOffset = 0x80000;  // when image_size is 0 (pre-3.17)

    std::uint64_t text_offset = 0;  // effective: kDefaultTextOffset if the header's image_size is 0
    std::uint64_t image_size = 0;   // bytes from the load address the kernel needs (0: unknown)
    std::uint64_t flags = 0;

    // Parses and checks the header. Throws SetupError with `what` (e.g. "kernel 'Image'") and the
    // reason when the bytes are not a little-endian arm64 Image.
    static ImageHeader parse(std::span<const std::uint8_t> bytes, const std::string& what);
};

// Where everything goes in RAM (all inside `ram`, non-overlapping).
struct BootPlan {
    GuestRange kernel;  // load address (= entry point) and the bytes reserved for it
    std::optional<GuestRange> initrd;
    GuestRange dtb;  // a whole 2 MiB-aligned 2 MiB block at the top of RAM
};

inline constexpr std::uint64_t kDtbMaxSize = 2ull << 20;  // booting.rst: at most 2 MiB

// Places the kernel at the 2 MiB-aligned start of RAM + text_offset, the DTB in the highest
// 2 MiB-aligned block, and the initrd just below the DTB (within the 32 GiB the kernel can reach
// from its own 1 GiB-aligned window). Throws SetupError naming the minimum -m when it does not fit.
BootPlan plan_boot(GuestRange ram, const ImageHeader& kernel, std::uint64_t kernel_file_size,
                   std::optional<std::uint64_t> initrd_size);

// A file opened for loading into guest RAM. `what` names it in errors ("kernel", "initrd").
class BootFile {
public:
    static BootFile open(const std::string& path, const std::string& what);

    const std::string& path() const { return path_; }
    std::uint64_t size() const { return size_; }
    // Reads `length` bytes from `offset` (short files throw SetupError).
    void read_at(std::uint64_t offset, std::span<std::uint8_t> out) const;
    // Reads the whole file into guest RAM at `where` (no intermediate copy).
    void load(const GuestMemory& memory, GuestPhysAddr where) const;
    ImageHeader image_header() const;

private:
    BootFile(UniqueFd fd, std::string path, std::string what, std::uint64_t size)
        : fd_(std::move(fd)), path_(std::move(path)), what_(std::move(what)), size_(size) {}
    UniqueFd fd_;
    std::string path_;
    std::string what_;
    std::uint64_t size_;
};

}  // namespace vmm
