// devices::vfio::Host: everything lkvm asks of the host for VFIO (the legacy container/group API
// of include/uapi/linux/vfio.h, Documentation/driver-api/vfio.rst) and the sysfs facts around it,
// behind one small seam: LinuxHost issues the system calls; tests/support/mock_vfio_host.hpp
// emulates them so the VFIO code is unit-tested and fuzzed on any host. HostFd and HostMmap
// are the RAII owners of what the seam hands out.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace devices::vfio {

// All calls may come from any thread (the real ones are system calls).
class Host {
public:
    virtual ~Host() = default;

    // File descriptors: results are >= 0 or -errno, never -1 with errno.
    virtual int open(const std::string& path, int flags) = 0;
    virtual void close(int fd) = 0;
    virtual int ioctl(int fd, unsigned long request, void* arg) = 0;
    virtual int ioctl_value(int fd, unsigned long request, unsigned long arg) = 0;
    virtual ssize_t pread(int fd, void* buffer, std::size_t size, off_t offset) = 0;
    virtual ssize_t pwrite(int fd, const void* buffer, std::size_t size, off_t offset) = 0;
    // A shared mapping of `fd` at `offset`, or nullptr.
    virtual void* mmap(std::size_t size, int prot, int fd, off_t offset) = 0;
    virtual void munmap(void* address, std::size_t size) = 0;

    // sysfs / procfs: a file's text (trailing newline kept), a symlink target, a directory's entries.
    virtual std::optional<std::string> read_text(const std::string& path) = 0;
    virtual std::optional<std::string> read_link(const std::string& path) = 0;
    virtual std::vector<std::string> list_dir(const std::string& path) = 0;
    // How many bytes this process may still pin (RLIMIT_MEMLOCK minus what is locked already);
    // nothing when unlimited (RLIM_INFINITY, or CAP_IPC_LOCK, which VFIO type1 honours).
    virtual std::optional<std::uint64_t> memlock_budget() = 0;
    // The host page size (the smallest VFIO mapping granule and KVM slot granule).
    virtual std::uint64_t page_size() = 0;
};

// The real host.
class LinuxHost final : public Host {
public:
    int open(const std::string& path, int flags) override;
    void close(int fd) override;
    int ioctl(int fd, unsigned long request, void* arg) override;
    int ioctl_value(int fd, unsigned long request, unsigned long arg) override;
    ssize_t pread(int fd, void* buffer, std::size_t size, off_t offset) override;
    ssize_t pwrite(int fd, const void* buffer, std::size_t size, off_t offset) override;
    void* mmap(std::size_t size, int prot, int fd, off_t offset) override;
    void munmap(void* address, std::size_t size) override;
    std::optional<std::string> read_text(const std::string& path) override;
    std::optional<std::string> read_link(const std::string& path) override;
    std::vector<std::string> list_dir(const std::string& path) override;
    std::optional<std::uint64_t> memlock_budget() override;
    std::uint64_t page_size() override;
};

// Move-only owner of a descriptor from Host::open (or an ioctl that returns one).
class HostFd {
public:
    HostFd() = default;
    HostFd(Host& host, int fd) : host_(&host), fd_(fd) {}
    HostFd(HostFd&& other) noexcept : host_(other.host_), fd_(std::exchange(other.fd_, -1)) {}
    HostFd& operator=(HostFd&& other) noexcept {
        if (this != &other) {
            reset();
            host_ = other.host_;
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    HostFd(const HostFd&) = delete;
    HostFd& operator=(const HostFd&) = delete;
    ~HostFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    void reset() {
        if (fd_ >= 0 && host_) host_->close(fd_);
        fd_ = -1;
    }

private:
    Host* host_ = nullptr;
    int fd_ = -1;
};

// Move-only owner of a Host::mmap result.
class HostMmap {
public:
    HostMmap() = default;
    HostMmap(Host& host, void* base, std::size_t size) : host_(&host), base_(base), size_(size) {}
    HostMmap(HostMmap&& other) noexcept
        : host_(other.host_), base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    HostMmap& operator=(HostMmap&& other) noexcept {
        if (this != &other) {
            reset();
            host_ = other.host_;
            base_ = std::exchange(other.base_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    HostMmap(const HostMmap&) = delete;
    HostMmap& operator=(const HostMmap&) = delete;
    ~HostMmap() { reset(); }

    std::uint8_t* data() const { return static_cast<std::uint8_t*>(base_); }
    std::size_t size() const { return size_; }
    void reset() {
        if (base_ && host_) host_->munmap(base_, size_);
        base_ = nullptr;
        size_ = 0;
    }

private:
    Host* host_ = nullptr;
    void* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace devices::vfio
