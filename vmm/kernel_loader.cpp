#include "vmm/kernel_loader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm {
namespace {

constexpr std::uint32_t kImageMagic = 0x644d5241;  // "ARM\x64", little-endian, at offset 56
constexpr std::size_t kMagicOffset = 56;
constexpr std::uint64_t kFlagBigEndian = 1;
constexpr std::uint64_t kKernelAlign = 2ull << 20;        // the Image base is 2 MiB aligned
constexpr std::uint64_t kInitrdAlign = 64ull << 10;       // any guest page size (4K/16K/64K)
constexpr std::uint64_t kInitrdWindow = 32ull << 30;      // initrd within 32 GiB of the kernel's
constexpr std::uint64_t kInitrdWindowAlign = 1ull << 30;  // 1 GiB-aligned window

std::uint64_t le64(std::span<const std::uint8_t> bytes, std::size_t offset) {
    std::uint64_t v;
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v & ~(a - 1); }
std::uint64_t mib_up(std::uint64_t bytes) { return (bytes + (1ull << 20) - 1) >> 20; }
}  // namespace

ImageHeader ImageHeader::parse(std::span<const std::uint8_t> bytes, const std::string& what) {
    if (bytes.size() < kSize)
        throw SetupError(what + " is not an arm64 Linux Image: only " + std::to_string(bytes.size()) +
                         " bytes, shorter than the 64-byte Image header");
    std::uint32_t magic;
    std::memcpy(&magic, bytes.data() + kMagicOffset, sizeof magic);
    if (magic != kImageMagic)
        throw SetupError(what +
                         " is not an arm64 Linux Image (no \"ARM\\x64\" magic at offset 56); "
                         "pass the uncompressed arch/arm64/boot/Image, not a vmlinuz/zImage/ELF");
    ImageHeader h;
    h.text_offset = le64(bytes, 8);
    h.image_size = le64(bytes, 16);
    h.flags = le64(bytes, 24);
    // booting.rst: with image_size 0 the kernel predates the field and text_offset is 0x80000.
    if (h.image_size == 0) h.text_offset = kDefaultTextOffset;
    if (h.flags & kFlagBigEndian)
        throw SetupError(what + " is a big-endian kernel; lkvm boots little-endian arm64 kernels only");
    if (h.text_offset >= kKernelAlign || !is_aligned(h.text_offset, 4096))
        throw SetupError(what + " has an invalid text_offset " + std::to_string(h.text_offset));
    return h;
}

BootPlan plan_boot(GuestRange ram, const ImageHeader& kernel, std::uint64_t kernel_file_size,
                   std::optional<std::uint64_t> initrd_size) {
    // The kernel needs image_size bytes from its start (BSS and early page tables included); an
    // old kernel without image_size needs at least its file size.
    const std::uint64_t kernel_bytes = std::max(kernel.image_size, kernel_file_size);
    const std::uint64_t initrd_bytes = initrd_size.value_or(0);
    auto too_small = [&](const char* why) {
        std::uint64_t need = kernel.text_offset + align_up(kernel_bytes, kInitrdAlign) +
                             align_up(initrd_bytes, kInitrdAlign) + 2 * kDtbMaxSize;
        return SetupError(std::string("guest RAM (-m ") + std::to_string(ram.size() >> 20) + ") is too small: " + why +
                          " (kernel " + std::to_string(mib_up(kernel_bytes)) + " MiB, initrd " +
                          std::to_string(mib_up(initrd_bytes)) + " MiB, device tree 2 MiB); use at least -m " +
                          std::to_string(mib_up(need)) + " (and more for the guest to run)");
    };

    const std::uint64_t ram_base = ram.base().value;
    const std::uint64_t ram_end = ram.end();
    const std::uint64_t kernel_base = align_up(ram_base, kKernelAlign);
    auto kernel_load = checked_add(kernel_base, kernel.text_offset);
    auto kernel_end = kernel_load ? checked_add(*kernel_load, kernel_bytes) : std::nullopt;
    if (!kernel_end || *kernel_end > ram_end) throw too_small("the kernel does not fit");

    // The DTB gets a whole 2 MiB block, so nothing else shares its (cacheable) block mapping.
    if (ram_end < kDtbMaxSize) throw too_small("no room for the device tree");
    const std::uint64_t dtb_base = align_down(ram_end, kKernelAlign) - kDtbMaxSize;
    if (dtb_base < *kernel_end) throw too_small("no room for the device tree above the kernel");

    BootPlan plan{*GuestRange::make(GuestPhysAddr{*kernel_load}, kernel_bytes), std::nullopt,
                  *GuestRange::make(GuestPhysAddr{dtb_base}, kDtbMaxSize)};
    if (initrd_size) {
        if (*initrd_size == 0) throw SetupError("the initrd is empty");
        const std::uint64_t window_end = align_down(kernel_base, kInitrdWindowAlign) + kInitrdWindow;
        const std::uint64_t top = std::min(dtb_base, window_end);
        const std::uint64_t padded = align_up(*initrd_size, kInitrdAlign);
        if (padded > top || top - padded < *kernel_end) throw too_small("the initrd does not fit");
        plan.initrd = GuestRange::make(GuestPhysAddr{align_down(top - padded, kInitrdAlign)}, *initrd_size);
    }
    return plan;
}

BootFile BootFile::open(const std::string& path, const std::string& what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cannot open " + what + " '" + path + "'");
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + what + " '" + path + "'");
    if (!S_ISREG(st.st_mode)) throw SetupError(what + " '" + path + "' is not a regular file");
    return BootFile(std::move(fd), path, what + " '" + path + "'", static_cast<std::uint64_t>(st.st_size));
}

void BootFile::read_at(std::uint64_t offset, std::span<std::uint8_t> out) const {
    std::size_t done = 0;
    while (done < out.size()) {
        ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read " + what_);
        if (n == 0) throw SetupError("cannot read " + what_ + ": the file is shorter than expected (truncated?)");
        done += static_cast<std::size_t>(n);
    }
}

void BootFile::load(const GuestMemory& memory, GuestPhysAddr where) const {
    if (size_ == 0) return;
    std::uint8_t* host = memory.host_pointer(where, size_);
    if (!host) throw SetupError(what_ + " does not fit in guest RAM at " + hex(where.value));
    read_at(0, std::span<std::uint8_t>(host, size_));
}

ImageHeader BootFile::image_header() const {
    std::uint8_t header[ImageHeader::kSize];
    std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(size_, sizeof header));
    read_at(0, std::span<std::uint8_t>(header, have));
    return ImageHeader::parse(std::span<const std::uint8_t>(header, have), what_);
}

}  // namespace vmm
