#include "vmm/base/console_keys.hpp"

namespace vmm {

ConsoleKeys::Action ConsoleKeys::feed(std::span<const std::uint8_t> input, std::vector<std::uint8_t>& to_guest) {
    Action action = Action::None;
    for (const std::uint8_t byte : input) {
        if (!pending_) {
            if (byte == kEscape) pending_ = true;
            else to_guest.push_back(byte);
            continue;
        }
        pending_ = false;
        switch (byte) {
            case 'x':
            case 'X': return Action::Quit;
            case 'h':
            case 'H':
            case '?': action = Action::Help; break;
            case kEscape: to_guest.push_back(kEscape); break;
            default:
                // Not one of ours: the guest gets what was typed.
                to_guest.push_back(kEscape);
                to_guest.push_back(byte);
                break;
        }
    }
    return action;
}

const char* ConsoleKeys::help_text() {
    return "\r\nlkvm console keys:\r\n"
           "  Ctrl-A x        end lkvm (the guest is stopped as by SIGTERM; exit status 0)\r\n"
           "  Ctrl-A Ctrl-A   send Ctrl-A to the guest\r\n"
           "  Ctrl-A h        show these keys\r\n"
           "Ctrl-C, Ctrl-Z and Ctrl-\\ go to the guest.\r\n";
}

}  // namespace vmm
