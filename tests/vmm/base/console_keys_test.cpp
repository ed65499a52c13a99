#include "vmm/base/console_keys.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {

using Action = vmm::ConsoleKeys::Action;

// Feeds `input` one read, returns what went to the guest.
std::string feed(vmm::ConsoleKeys& keys, const std::string& input, Action& action) {
    std::vector<std::uint8_t> out;
    action = keys.feed(std::span(reinterpret_cast<const std::uint8_t*>(input.data()), input.size()), out);
    return std::string(out.begin(), out.end());
}

}  // namespace

TEST_CASE("ConsoleKeys passes ordinary bytes, Ctrl-C included, to the guest") {
    vmm::ConsoleKeys keys;
    Action action{};
    CHECK(feed(keys, "ls\x03\r\x1a\x1c", action) == "ls\x03\r\x1a\x1c");
    CHECK(action == Action::None);
    CHECK_FALSE(keys.pending());
}

TEST_CASE("ConsoleKeys: Ctrl-A x quits and drops what follows it in the read") {
    vmm::ConsoleKeys keys;
    Action action{};
    CHECK(feed(keys, "ab\x01xcd", action) == "ab");
    CHECK(action == Action::Quit);
    vmm::ConsoleKeys upper;
    CHECK(feed(upper, "\x01X", action).empty());
    CHECK(action == Action::Quit);
}

TEST_CASE("ConsoleKeys: Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A with another key sends both") {
    vmm::ConsoleKeys keys;
    Action action{};
    CHECK(feed(keys, "\x01\x01", action) == "\x01");
    CHECK(action == Action::None);
    CHECK(feed(keys, "\x01q", action) == "\x01q");
    CHECK(feed(keys, "\x01\x01\x01x", action) == "\x01");
    CHECK(action == Action::Quit);
}

TEST_CASE("ConsoleKeys: Ctrl-A h (or ?) asks for the help and sends nothing") {
    vmm::ConsoleKeys keys;
    Action action{};
    CHECK(feed(keys, "a\x01hb", action) == "ab");
    CHECK(action == Action::Help);
    CHECK(feed(keys, "\x01?", action).empty());
    CHECK(action == Action::Help);
    CHECK(std::string(vmm::ConsoleKeys::help_text()).find("Ctrl-A x") != std::string::npos);
}

TEST_CASE("ConsoleKeys: a lone Ctrl-A at the end of a read waits for the next read") {
    vmm::ConsoleKeys keys;
    Action action{};
    CHECK(feed(keys, "abc\x01", action) == "abc");
    CHECK(action == Action::None);
    CHECK(keys.pending());
    CHECK(feed(keys, "x", action).empty());
    CHECK(action == Action::Quit);

    vmm::ConsoleKeys again;
    CHECK(feed(again, "\x01", action).empty());
    CHECK(feed(again, "\x01", action) == "\x01");
    CHECK_FALSE(again.pending());
}

TEST_CASE("ConsoleKeys fed byte by byte agrees with one read") {
    const std::string input = "echo\x01\x01hi\x01z\x03\x01h!\x01x tail";
    vmm::ConsoleKeys whole;
    Action whole_action{};
    const std::string at_once = feed(whole, input, whole_action);
    vmm::ConsoleKeys bytes;
    std::string one_by_one;
    bool help = false;
    Action last = Action::None;
    for (char c : input) {
        Action action{};
        one_by_one += feed(bytes, std::string(1, c), action);
        help = help || action == Action::Help;
        if (action == Action::Quit) {
            last = action;
            break;
        }
    }
    CHECK(at_once == "echo\x01hi\x01z\x03!");
    CHECK(one_by_one == at_once);
    CHECK(whole_action == Action::Quit);
    CHECK(last == Action::Quit);
    CHECK(help);
}
