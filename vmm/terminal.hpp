// RAII for the controlling terminal: while lkvm runs a guest, keys go to the guest as typed
// (non-canonical, no echo) except Ctrl-C, which still raises SIGINT for an orderly shutdown.
// The original settings come back when the object dies, on every exit path that unwinds.
#pragma once

#include <termios.h>

namespace vmm {

class Terminal {
public:
    // Does nothing if `fd` is not a terminal (a pipe, a file, /dev/null).
    explicit Terminal(int fd);
    ~Terminal();
    Terminal(const Terminal&) = delete;
    Terminal& operator=(const Terminal&) = delete;

    bool is_raw() const { return raw_; }

private:
    int fd_;
    bool raw_ = false;
    termios saved_{};
};

}  // namespace vmm
