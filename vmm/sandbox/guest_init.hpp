// The guest side of `lkvm sandbox`: lkvm's own binary, run by the guest kernel as PID 1 under
// the name /lkvm-init (vmm/sandbox/session.cpp puts it into the initrd). It loads the modules the
// shares need, mounts the host's / read-only with --workdir over it read-write, runs CMD chrooted
// there with stdout on virtio-console and stderr on the UART, writes CMD's status to the control
// share and powers the guest off. Messages of its own go to the kernel console (lkvm's stderr).
#pragma once

namespace vmm::sandbox {

// True when this process is that init: PID 1, started as .../lkvm-init.
bool is_guest_init(int argc, const char* const* argv);

[[noreturn]] void run_guest_init();

}  // namespace vmm::sandbox
