// Test-only: the process at its descriptor limit, so the next open(), socket() or accept() fails
// with EMFILE. RAII: the soft RLIMIT_NOFILE is set to the lowest free descriptor number while the
// object lives (release() restores it earlier). Descriptors already open stay usable.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <stdexcept>

namespace support {

class DescriptorLimitReached {
public:
    DescriptorLimitReached() {
        if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) throw std::runtime_error("getrlimit failed");
        const int lowest_free = ::dup(0);
        if (lowest_free < 0) throw std::runtime_error("dup failed");
        ::close(lowest_free);
        rlimit full = saved_;
        full.rlim_cur = static_cast<rlim_t>(lowest_free);
        if (::setrlimit(RLIMIT_NOFILE, &full) != 0) throw std::runtime_error("setrlimit failed");
        active_ = true;
    }
    ~DescriptorLimitReached() { release(); }
    DescriptorLimitReached(const DescriptorLimitReached&) = delete;
    DescriptorLimitReached& operator=(const DescriptorLimitReached&) = delete;

    void release() {
        if (active_) ::setrlimit(RLIMIT_NOFILE, &saved_);
        active_ = false;
    }

private:
    rlimit saved_{};
    bool active_ = false;
};

}  // namespace support
