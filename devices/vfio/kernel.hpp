// devices::vfio::Kernel: everything lkvm asks of the host for VFIO (the legacy container/group API
// of include/uapi/linux/vfio.h, Documentation/driver-api/vfio.rst) and the sysfs facts around it,
// behind one small seam: HostKernel issues the system calls; tests/support/mock_vfio_kernel.hpp
// emulates them so the VFIO code is unit-tested and fuzzed on any host. KernelFd and KernelMapping
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
class Kernel {
public:
    virtual ~Kernel() = default;

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
class HostKernel final : public Kernel {
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

// Move-only owner of a descriptor from Kernel::open (or an ioctl that returns one).
class KernelFd {
public:
    KernelFd() = default;
    KernelFd(Kernel& kernel, int fd) : kernel_(&kernel), fd_(fd) {}
    KernelFd(KernelFd&& other) noexcept : kernel_(other.kernel_), fd_(std::exchange(other.fd_, -1)) {}
    KernelFd& operator=(KernelFd&& other) noexcept {
        if (this != &other) {
            reset();
            kernel_ = other.kernel_;
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    KernelFd(const KernelFd&) = delete;
    KernelFd& operator=(const KernelFd&) = delete;
    ~KernelFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    void reset() {
        if (fd_ >= 0 && kernel_) kernel_->close(fd_);
        fd_ = -1;
    }

private:
    Kernel* kernel_ = nullptr;
    int fd_ = -1;
};

// Move-only owner of a Kernel::mmap result.
class KernelMapping {
public:
    KernelMapping() = default;
    KernelMapping(Kernel& kernel, void* base, std::size_t size) : kernel_(&kernel), base_(base), size_(size) {}
    KernelMapping(KernelMapping&& other) noexcept
        : kernel_(other.kernel_), base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    KernelMapping& operator=(KernelMapping&& other) noexcept {
        if (this != &other) {
            reset();
            kernel_ = other.kernel_;
            base_ = std::exchange(other.base_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    KernelMapping(const KernelMapping&) = delete;
    KernelMapping& operator=(const KernelMapping&) = delete;
    ~KernelMapping() { reset(); }

    std::uint8_t* data() const { return static_cast<std::uint8_t*>(base_); }
    std::size_t size() const { return size_; }
    void reset() {
        if (base_ && kernel_) kernel_->munmap(base_, size_);
        base_ = nullptr;
        size_ = 0;
    }

private:
    Kernel* kernel_ = nullptr;
    void* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace devices::vfio
