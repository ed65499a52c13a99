// A writer for the "newc" cpio format, the format Linux unpacks into its initial root file
// system (Documentation/driver-api/early-userspace/buffer-format.rst). lkvm sandbox uses it to
// put its own init into the guest: an archive appended to the user's initrd (the kernel unpacks
// concatenated archives in order, so a later file of the same name wins) or used alone.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vmm::sandbox {

class CpioWriter {
public:
    // Names are relative ("dev/console"); a directory must be added before what it holds. The
    // permission bits of `mode` are kept, the file type comes from the call.
    void add_directory(const std::string& name, std::uint32_t mode);
    void add_file(const std::string& name, std::uint32_t mode, std::span<const std::uint8_t> contents);
    void add_char_device(const std::string& name, std::uint32_t mode, std::uint32_t major, std::uint32_t minor);

    // The archive, closed by the TRAILER!!! entry; the writer is empty afterwards.
    std::vector<std::uint8_t> finish();

private:
    struct Entry {
        std::uint32_t mode;
        std::uint32_t rdev_major = 0;
        std::uint32_t rdev_minor = 0;
    };
    void add(const std::string& name, const Entry& entry, std::span<const std::uint8_t> contents);

    std::vector<std::uint8_t> out_;
    std::uint32_t next_inode_ = 1;
};

// Zero bytes that bring `size` to the next multiple of 4: newc headers start 4-byte aligned,
// also where a second archive follows a first one (init/initramfs.c skips the zeros).
inline std::size_t cpio_padding(std::size_t size) { return (4 - size % 4) % 4; }

}  // namespace vmm::sandbox
