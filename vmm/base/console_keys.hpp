// The console's escape keys for `lkvm run` on a terminal (ISIG is off, so Ctrl-C is the guest's):
//
//   Ctrl-A x        end lkvm (an orderly teardown, as on SIGTERM; exit status 0)
//   Ctrl-A Ctrl-A   one Ctrl-A for the guest
//   Ctrl-A h or ?   print these keys
//   Ctrl-A other    both bytes go to the guest
//
// A state machine fed the bytes as read: a Ctrl-A at the end of one read waits for the next.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace vmm {

class ConsoleKeys {
public:
    static constexpr std::uint8_t kEscape = 0x01;  // Ctrl-A
    enum class Action { None, Quit, Help };

    // Appends the bytes meant for the guest to `to_guest`. Stops at the first Quit (the bytes
    // after it are dropped: lkvm is ending) and returns it; Help is returned after the whole
    // input was consumed (several requests in one read print once).
    Action feed(std::span<const std::uint8_t> input, std::vector<std::uint8_t>& to_guest);

    // True between a Ctrl-A and the key after it.
    bool pending() const { return pending_; }

    // The help text, CR-LF line ends (the terminal is raw).
    static const char* help_text();

private:
    bool pending_ = false;
};

}  // namespace vmm
