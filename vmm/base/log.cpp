#include "vmm/base/log.hpp"

#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace vmm {

std::string hex(std::uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
    return text;
}

void append_format(std::string& out, const char* format, ...) {
    va_list args;
    va_start(args, format);
    va_list again;
    va_copy(again, args);
    const int length = std::vsnprintf(nullptr, 0, format, args);
    va_end(args);
    if (length > 0) {
        const std::size_t at = out.size();
        out.resize(at + static_cast<std::size_t>(length) + 1);
        std::vsnprintf(out.data() + at, static_cast<std::size_t>(length) + 1, format, again);
        out.resize(at + static_cast<std::size_t>(length));
    }
    va_end(again);
}

namespace {

std::atomic<int>& level_storage() {
    static std::atomic<int> level{static_cast<int>(LogLevel::Warn)};
    return level;
}

void vlog(const char* tag, const char* format, va_list args) {
    char line[1024];
    std::vsnprintf(line, sizeof line, format, args);
    // One write per line so lines from different threads do not interleave.
    std::fprintf(stderr, "lkvm: %s%s\n", tag, line);
}

}  // namespace

void set_log_level(LogLevel level) { level_storage().store(static_cast<int>(level)); }
bool log_enabled(LogLevel level) { return static_cast<int>(level) <= level_storage().load(); }

#define LKVM_DEFINE_LOG(name, level, tag) \
    void name(const char* format, ...) {  \
        if (!log_enabled(level)) return;  \
        va_list args;                     \
        va_start(args, format);           \
        vlog(tag, format, args);          \
        va_end(args);                     \
    }
LKVM_DEFINE_LOG(log_error, LogLevel::Error, "error: ")
LKVM_DEFINE_LOG(log_warn, LogLevel::Warn, "warning: ")
LKVM_DEFINE_LOG(log_info, LogLevel::Info, "")
LKVM_DEFINE_LOG(log_debug, LogLevel::Debug, "debug: ")
#undef LKVM_DEFINE_LOG

bool RateLimiter::allow(std::uint64_t* dropped) {
    std::lock_guard guard(lock_);
    ++total_;
    auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= period_) {
        window_start_ = now;
        in_window_ = 0;
    }
    if (in_window_ >= burst_) {
        ++suppressed_;
        return false;
    }
    ++in_window_;
    if (dropped) *dropped = suppressed_;
    suppressed_ = 0;
    return true;
}

std::uint64_t RateLimiter::total() const {
    std::lock_guard guard(lock_);
    return total_;
}

void guest_error(RateLimiter& limiter, const char* format, ...) {
    std::uint64_t dropped = 0;
    if (!log_enabled(LogLevel::Warn) || !limiter.allow(&dropped)) return;
    char line[1024];
    va_list args;
    va_start(args, format);
    std::vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (dropped)
        std::fprintf(stderr, "lkvm: guest error: %s (%llu similar messages suppressed)\n", line,
                     static_cast<unsigned long long>(dropped));
    else std::fprintf(stderr, "lkvm: guest error: %s\n", line);
}

}  // namespace vmm
