// RLIMIT_NOFILE, lkvm's descriptor budget. A guest can make lkvm hold host descriptors (each 9p
// fid holds up to two), so what guests may hold is bounded against what the limit leaves after
// lkvm's own needs; a guest that reaches its bound gets an error in its protocol (EMFILE from
// 9p), and lkvm keeps the descriptors it needs to run (eventfds, sockets, the control socket).
#pragma once

#include <cstdint>

namespace vmm {

// Descriptors kept for lkvm itself: KVM's (the VM, the vCPUs, an ioeventfd and an irqfd per
// virtio queue), the event loop's, the disks, the control socket and its clients, user-mode
// networking's sockets, VFIO's, and the few a 9p request holds while it is served.
inline constexpr std::uint64_t kReservedDescriptors = 512;

// Raises the soft RLIMIT_NOFILE to the hard limit (setrlimit(2): any process may) and returns
// the soft limit in force afterwards (unchanged when the raise fails).
std::uint64_t raise_descriptor_limit();

// The soft RLIMIT_NOFILE in force.
std::uint64_t descriptor_limit();

// What `limit` leaves for descriptors guests make lkvm hold, after kReservedDescriptors.
constexpr std::uint64_t descriptors_for_guests(std::uint64_t limit) {
    return limit > kReservedDescriptors ? limit - kReservedDescriptors : 0;
}

}  // namespace vmm
