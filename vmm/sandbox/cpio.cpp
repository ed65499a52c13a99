#include "vmm/sandbox/cpio.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <stdexcept>
#include <utility>

namespace vmm::sandbox {
namespace {

constexpr std::uint32_t kPermissionBits = 07777;

void append_hex8(std::vector<std::uint8_t>& out, std::uint64_t value) {
    if (value > 0xffffffffu) throw std::length_error("cpio: a field does not fit 32 bits");
    char text[9];
    std::snprintf(text, sizeof text, "%08X", static_cast<unsigned>(value));
    out.insert(out.end(), text, text + 8);
}

void pad(std::vector<std::uint8_t>& out) { out.resize(out.size() + cpio_padding(out.size())); }

}  // namespace

void CpioWriter::add(const std::string& name, const Entry& entry, std::span<const std::uint8_t> contents) {
    // The header: magic and 13 fields of 8 hex digits (buffer-format.rst), in this order.
    static constexpr char kMagic[] = "070701";
    out_.insert(out_.end(), kMagic, kMagic + 6);
    const bool directory = S_ISDIR(entry.mode);
    for (std::uint64_t field : {std::uint64_t{next_inode_++},        // ino
                                std::uint64_t{entry.mode},           // mode
                                std::uint64_t{0}, std::uint64_t{0},  // uid, gid: root
                                std::uint64_t{directory ? 2u : 1u},  // nlink
                                std::uint64_t{0},                    // mtime
                                std::uint64_t{contents.size()},      // filesize
                                std::uint64_t{0}, std::uint64_t{0},  // devmajor, devminor
                                std::uint64_t{entry.rdev_major}, std::uint64_t{entry.rdev_minor},
                                std::uint64_t{name.size() + 1},  // namesize, with the NUL
                                std::uint64_t{0}})               // check: unused by newc
        append_hex8(out_, field);
    out_.insert(out_.end(), name.begin(), name.end());
    out_.push_back(0);
    pad(out_);
    out_.insert(out_.end(), contents.begin(), contents.end());
    pad(out_);
}

void CpioWriter::add_directory(const std::string& name, std::uint32_t mode) {
    add(name, {.mode = S_IFDIR | (mode & kPermissionBits)}, {});
}

void CpioWriter::add_file(const std::string& name, std::uint32_t mode, std::span<const std::uint8_t> contents) {
    add(name, {.mode = S_IFREG | (mode & kPermissionBits)}, contents);
}

void CpioWriter::add_char_device(const std::string& name, std::uint32_t mode, std::uint32_t major,
                                 std::uint32_t minor) {
    add(name, {.mode = S_IFCHR | (mode & kPermissionBits), .rdev_major = major, .rdev_minor = minor}, {});
}

std::vector<std::uint8_t> CpioWriter::finish() {
    add("TRAILER!!!", {.mode = 0}, {});
    next_inode_ = 1;
    return std::exchange(out_, {});
}

}  // namespace vmm::sandbox
