#include "vmm/base/terminal.hpp"

#include <unistd.h>

namespace vmm {

bool Terminal::may_use(int fd) {
    if (!::isatty(fd)) return true;
    // Job-control stops only concern our controlling terminal (tcgetpgrp fails on any other).
    pid_t foreground = ::tcgetpgrp(fd);
    return foreground < 0 || foreground == ::getpgrp();
}

Terminal::Terminal(int fd, Keys keys) : fd_(fd) {
    if (!::isatty(fd_) || !may_use(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
    termios raw = saved_;
    // Input: no CR->NL translation and no XON/XOFF, so the guest sees exactly what was typed.
    raw.c_iflag &= ~static_cast<tcflag_t>(ICRNL | INLCR | IGNCR | IXON);
    // Local: byte-at-a-time, no echo (the guest echoes). ISIG: Ctrl-C raises SIGINT, or (off) is
    // the byte 0x03 for the guest, as kvmtool's and QEMU's consoles do.
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ECHONL | IEXTEN);
    if (keys == Keys::ToGuest) raw.c_lflag &= ~static_cast<tcflag_t>(ISIG);
    else raw.c_lflag |= ISIG;
    // Ctrl-Z and Ctrl-\ go to the guest: stopping or core-dumping lkvm would leave the terminal raw.
    raw.c_cc[VSUSP] = _POSIX_VDISABLE;
    raw.c_cc[VQUIT] = _POSIX_VDISABLE;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    // Output keeps OPOST: lkvm's own messages still get CR-LF line endings.
    if (::tcsetattr(fd_, TCSANOW, &raw) == 0) raw_ = true;
}

Terminal::~Terminal() {
    if (raw_) ::tcsetattr(fd_, TCSANOW, &saved_);
}

}  // namespace vmm
