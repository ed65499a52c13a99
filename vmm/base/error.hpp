// Setup errors: the only exception lkvm throws on purpose. Guest-triggered conditions are never
// exceptions (they are answered in the protocol); setup steps throw SetupError with a message that
// names the step, the resource and how to fix it, and main() catches it once.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vmm {

class SetupError : public std::runtime_error {
public:
    explicit SetupError(const std::string& message) : std::runtime_error(message) {}
};

// "<what>: <strerror(errno)>" for a failed system call during setup.
[[noreturn]] inline void throw_errno(const std::string& what, int err = errno) {
    throw SetupError(what + ": " + std::strerror(err));
}

}  // namespace vmm
