// A console backend that writes to a host file descriptor (lkvm's stdout). Blocking writes: a
// slow reader slows the guest's console down rather than losing output.
#pragma once

#include <atomic>

#include "devices/uart_16550.hpp"

namespace devices {

class FdOutput final : public SerialOutput {
public:
    explicit FdOutput(int fd) : fd_(fd) {}
    void write_bytes(std::span<const std::uint8_t> bytes) override;

private:
    int fd_;
    std::atomic<bool> broken_{false};  // the reader went away: drop output instead of failing every byte
};

}  // namespace devices
