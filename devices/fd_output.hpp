// Guest console output to a host file descriptor (lkvm's stdout), shared by the UART and the
// virtio-console. A reader that stops reading (a CI runner, a paused terminal) must not hold the
// writing thread: the vCPU a teardown kick wants back, or the event loop that has to see SIGTERM.
// So a write waits at most a stall limit for the fd to take bytes, and a kick (EINTR) ends it at
// once; what could not be written is dropped and counted.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

#include "devices/uart_16550.hpp"
#include "virtio/console.hpp"
#include "vmm/base/log.hpp"

namespace devices {

class FdOutput final : public SerialOutput, public virtio::ConsoleSink {
public:
    static constexpr std::chrono::milliseconds kDefaultStallLimit{500};

    // `fd` is not owned. `stall_limit`: how long one write may wait for a reader that takes no
    // bytes; once it was reached, later writes drop at once until the fd takes bytes again.
    explicit FdOutput(int fd, std::chrono::milliseconds stall_limit = kDefaultStallLimit)
        : fd_(fd), stall_limit_(stall_limit) {}

    void write_bytes(std::span<const std::uint8_t> bytes) override;                   // SerialOutput
    void write(std::span<const std::uint8_t> bytes) override { write_bytes(bytes); }  // ConsoleSink

    std::uint64_t dropped_bytes() const { return dropped_.load(std::memory_order_relaxed); }

private:
    void drop(std::size_t n, const char* why);

    int fd_;
    std::chrono::milliseconds stall_limit_;
    std::atomic<bool> broken_{false};   // the reader went away for good (EPIPE, hang-up)
    std::atomic<bool> stalled_{false};  // the last wait ran out: don't wait again until it moves
    std::atomic<std::uint64_t> dropped_{0};
    vmm::RateLimiter log_;
};

}  // namespace devices
