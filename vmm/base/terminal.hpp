// RAII for the controlling terminal: while lkvm runs a guest, keys go to the guest as typed
// (non-canonical, no echo). Keys::ToGuest (`lkvm run`): Ctrl-C, Ctrl-Z and Ctrl-\ are bytes for
// the guest too (ISIG off); lkvm is left with Ctrl-A x (vmm/base/console_keys.hpp).
// Keys::CtrlCStops (`lkvm sandbox`, not interactive): Ctrl-C still raises SIGINT.
// The original settings come back when the object dies, on every exit path that unwinds.
#pragma once

#include <termios.h>

namespace vmm {

class Terminal {
public:
    enum class Keys { ToGuest, CtrlCStops };
    // Does nothing if `fd` is not a terminal (a pipe, a file, /dev/null) or not ours (may_use()).
    explicit Terminal(int fd, Keys keys = Keys::CtrlCStops);
    ~Terminal();
    Terminal(const Terminal&) = delete;
    Terminal& operator=(const Terminal&) = delete;

    bool is_raw() const { return raw_; }

    // False when `fd` is a terminal this process does not own (lkvm started with '&'): reading it
    // or changing its mode would stop lkvm with SIGTTIN/SIGTTOU. True for non-terminals.
    static bool may_use(int fd);

private:
    int fd_;
    bool raw_ = false;
    termios saved_{};
};

}  // namespace vmm
