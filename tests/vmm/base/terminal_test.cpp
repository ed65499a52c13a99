#include "vmm/base/terminal.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmm/base/unique_fd.hpp"

namespace {

// A pseudo-terminal pair; `tty` is invalid (and a message says the test is skipped) without ptys.
struct Pty {
    vmm::UniqueFd master{::posix_openpt(O_RDWR | O_NOCTTY)};
    vmm::UniqueFd tty;
    Pty() {
        if (!master || ::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0)
            MESSAGE("no pseudo-terminals here; skipped");
        else tty.reset(::open(::ptsname(master.get()), O_RDWR | O_NOCTTY));
    }
};

}  // namespace

TEST_CASE("Terminal makes a tty raw but keeps Ctrl-C and output processing, and restores it") {
    Pty pty;
    if (!pty.tty) return;
    vmm::UniqueFd& tty = pty.tty;
    termios before{};
    REQUIRE(::tcgetattr(tty.get(), &before) == 0);
    REQUIRE((before.c_lflag & ICANON) != 0);
    {
        vmm::Terminal terminal(tty.get());
        CHECK(terminal.is_raw());
        termios raw{};
        REQUIRE(::tcgetattr(tty.get(), &raw) == 0);
        CHECK((raw.c_lflag & ICANON) == 0);
        CHECK((raw.c_lflag & ECHO) == 0);
        CHECK((raw.c_lflag & ISIG) != 0);
        CHECK((raw.c_oflag & OPOST) != 0);
        CHECK((raw.c_iflag & ICRNL) == 0);
        CHECK(raw.c_cc[VSUSP] == _POSIX_VDISABLE);
        CHECK(raw.c_cc[VINTR] == before.c_cc[VINTR]);
    }
    termios after{};
    REQUIRE(::tcgetattr(tty.get(), &after) == 0);
    CHECK(after.c_lflag == before.c_lflag);
    CHECK(after.c_iflag == before.c_iflag);
    CHECK(after.c_cc[VSUSP] == before.c_cc[VSUSP]);
}

TEST_CASE("Terminal with Keys::ToGuest turns ISIG off: Ctrl-C is a byte for the guest") {
    Pty pty;
    if (!pty.tty) return;
    vmm::UniqueFd& tty = pty.tty;
    vmm::UniqueFd& master = pty.master;
    termios before{};
    REQUIRE(::tcgetattr(tty.get(), &before) == 0);
    {
        vmm::Terminal terminal(tty.get(), vmm::Terminal::Keys::ToGuest);
        CHECK(terminal.is_raw());
        termios raw{};
        REQUIRE(::tcgetattr(tty.get(), &raw) == 0);
        CHECK((raw.c_lflag & ISIG) == 0);
        CHECK((raw.c_lflag & ICANON) == 0);
        CHECK((raw.c_oflag & OPOST) != 0);
        // The byte arrives as typed.
        const char ctrl_c = 0x03;
        REQUIRE(::write(master.get(), &ctrl_c, 1) == 1);
        char got = 0;
        REQUIRE(::read(tty.get(), &got, 1) == 1);
        CHECK(got == ctrl_c);
    }
    termios after{};
    REQUIRE(::tcgetattr(tty.get(), &after) == 0);
    CHECK(after.c_lflag == before.c_lflag);
}

TEST_CASE("Terminal leaves a non-tty alone") {
    vmm::UniqueFd null_fd(::open("/dev/null", O_RDWR));
    vmm::Terminal terminal(null_fd.get());
    CHECK_FALSE(terminal.is_raw());
}
