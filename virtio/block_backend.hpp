// Storage behind a virtio-blk device: a small seam so the device model is tested against a temp
// file and could later sit on other backends. Byte offsets; the device does the sector maths.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "vmm/base/unique_fd.hpp"

namespace virtio {

class BlockBackend {
public:
    virtual ~BlockBackend() = default;
    virtual std::uint64_t size() const = 0;  // bytes
    // Whole-buffer transfers: false on any host error or short transfer (the device answers IOERR).
    virtual bool read_at(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
    virtual bool write_at(std::uint64_t offset, std::span<const std::uint8_t> in) = 0;
    virtual bool flush() = 0;
};

// A raw image file (or block device) through pread/pwrite/fdatasync.
class FileBackend final : public BlockBackend {
public:
    // Opens `path` read-only or read-write. Throws vmm::SetupError naming the file on failure.
    static std::unique_ptr<FileBackend> open(const std::string& path, bool read_only);
    FileBackend(vmm::UniqueFd fd, std::uint64_t size) : fd_(std::move(fd)), size_(size) {}

    std::uint64_t size() const override { return size_; }
    bool read_at(std::uint64_t offset, std::span<std::uint8_t> out) override;
    bool write_at(std::uint64_t offset, std::span<const std::uint8_t> in) override;
    bool flush() override;

private:
    vmm::UniqueFd fd_;
    std::uint64_t size_;
};

}  // namespace virtio
