#include "devices/fd_output.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/log.hpp"

namespace devices {

void FdOutput::write_bytes(std::span<const std::uint8_t> bytes) {
    std::size_t done = 0;
    while (!broken_ && done < bytes.size()) {
        ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
        // EINTR: a vCPU thread was kicked (lkvm is stopping) while stdout blocked; drop the rest
        // rather than block the teardown on a reader that may never come back.
        if (n < 0 && errno == EINTR) return;
        if (n <= 0) {
            // EPIPE (SIGPIPE is blocked) or a closed terminal: the guest keeps running unheard.
            vmm::log_warn("console output stopped: %s", n < 0 ? std::strerror(errno) : "short write");
            broken_ = true;
            return;
        }
        done += static_cast<std::size_t>(n);
    }
}

}  // namespace devices
