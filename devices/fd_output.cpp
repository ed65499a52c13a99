#include "devices/fd_output.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace devices {

void FdOutput::drop(std::size_t n, const char* why) {
    dropped_.fetch_add(n, std::memory_order_relaxed);
    if (log_.allow())
        vmm::log_warn("console output: %zu bytes dropped (%s), %llu in all", n, why,
                      static_cast<unsigned long long>(dropped_.load(std::memory_order_relaxed)));
}

void FdOutput::write_bytes(std::span<const std::uint8_t> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        if (broken_.load(std::memory_order_relaxed)) {
            dropped_.fetch_add(bytes.size() - done, std::memory_order_relaxed);
            return;
        }
        // Wait for room, bounded. POLLOUT on a pipe means PIPE_BUF bytes fit, so a piece of at
        // most that size does not block in write() either.
        pollfd p{fd_, POLLOUT, 0};
        const int timeout = stalled_.load(std::memory_order_relaxed) ? 0 : static_cast<int>(stall_limit_.count());
        const int ready = ::poll(&p, 1, timeout);
        if (ready < 0 && errno == EINTR) {
            // A vCPU thread was kicked (lkvm is stopping): give it back now.
            drop(bytes.size() - done, "interrupted");
            return;
        }
        if (ready == 0) {
            stalled_.store(true, std::memory_order_relaxed);
            drop(bytes.size() - done, "stdout not writable");
            return;
        }
        if (ready < 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL))) {
            vmm::log_warn("console output stopped: %s", ready < 0 ? std::strerror(errno) : "the reader went away");
            broken_.store(true, std::memory_order_relaxed);
            continue;
        }
        const std::size_t piece = std::min<std::size_t>(bytes.size() - done, PIPE_BUF);
        const ssize_t n = ::write(fd_, bytes.data() + done, piece);
        if (n < 0 && errno == EINTR) {
            drop(bytes.size() - done, "interrupted");
            return;
        }
        if (n < 0 && errno == EAGAIN) {  // a non-blocking fd that filled up after the poll
            stalled_.store(true, std::memory_order_relaxed);
            drop(bytes.size() - done, "stdout full");
            return;
        }
        if (n <= 0) {
            // EPIPE (SIGPIPE is blocked) or a closed terminal: the guest keeps running unheard.
            vmm::log_warn("console output stopped: %s", n < 0 ? std::strerror(errno) : "short write");
            broken_.store(true, std::memory_order_relaxed);
            continue;
        }
        stalled_.store(false, std::memory_order_relaxed);
        done += static_cast<std::size_t>(n);
    }
}

}  // namespace devices
