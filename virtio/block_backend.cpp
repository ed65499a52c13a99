// Raw-file block backend (pread/pwrite/fdatasync), used by virtio-blk.
#include "virtio/block_backend.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "vmm/base/error.hpp"

namespace virtio {

std::unique_ptr<FileBackend> FileBackend::open(const std::string& path, bool read_only) {
    vmm::UniqueFd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd) vmm::throw_errno("virtio-blk: cannot open disk image '" + path + "'");
    // lseek works for regular files and block devices alike.
    const off_t end = ::lseek(fd.get(), 0, SEEK_END);
    if (end < 0) vmm::throw_errno("virtio-blk: cannot size disk image '" + path + "'");
    return std::make_unique<FileBackend>(std::move(fd), static_cast<std::uint64_t>(end));
}

bool FileBackend::read_at(std::uint64_t offset, std::span<std::uint8_t> out) {
    std::size_t done = 0;
    // Bounded: every iteration transfers at least one byte or returns.
    while (done < out.size()) {
        if (offset + done > static_cast<std::uint64_t>(LLONG_MAX)) return false;
        const ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;  // error, or EOF inside the advertised capacity (file shrank)
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool FileBackend::write_at(std::uint64_t offset, std::span<const std::uint8_t> in) {
    std::size_t done = 0;
    while (done < in.size()) {
        if (offset + done > static_cast<std::uint64_t>(LLONG_MAX)) return false;
        const ssize_t n = ::pwrite(fd_.get(), in.data() + done, in.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool FileBackend::flush() {
    int rc;
    do rc = ::fdatasync(fd_.get());
    while (rc < 0 && errno == EINTR);
    return rc == 0;
}

}  // namespace virtio
