// Leveled logging to stderr, and rate limiting for anything a guest can trigger (a hostile guest
// must not be able to flood the host's logs). The level is process-wide configuration, set once
// by main from --debug; rate limiters are owned by the objects that log guest errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace vmm {

enum class LogLevel { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);

// `value` in hex for messages: "0x1f", and "0x0" for zero (printf's %#x would print a bare "0").
std::string hex(std::uint64_t value);
// Appends printf-style text to `out` (any length; for stat lines and dumps).
void append_format(std::string& out, const char* format, ...) __attribute__((format(printf, 2, 3)));

void log_error(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char* format, ...) __attribute__((format(printf, 1, 2)));

// At most `burst` messages per `period`; the next printed message says how many were dropped.
// Thread-safe (vCPU threads may share one, e.g. the bus's).
class RateLimiter {
public:
    explicit RateLimiter(unsigned burst = 10, std::chrono::seconds period = std::chrono::seconds(5))
        : burst_(burst), period_(period) {}
    // True if a message may be printed now (then *dropped is how many were suppressed since the
    // last printed one); otherwise counts the message as suppressed.
    bool allow(std::uint64_t* dropped = nullptr);
    // Every message ever offered, printed or not.
    std::uint64_t total() const;

private:
    mutable std::mutex lock_;
    unsigned burst_;
    std::chrono::seconds period_;
    std::chrono::steady_clock::time_point window_start_{};
    unsigned in_window_ = 0;
    std::uint64_t suppressed_ = 0;
    std::uint64_t total_ = 0;
};

// A warning caused by guest behaviour: "lkvm: guest error: ..." through the limiter.
void guest_error(RateLimiter& limiter, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace vmm
