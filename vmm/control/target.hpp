// What the control channel can do to a VM (implemented by vmm::VmControl over the Machine's parts,
// and by fakes in the tests), and the dispatcher that turns a parsed request into calls on it.
// Everything here runs on the event-loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "vmm/control/line_protocol.hpp"

namespace vmm {

class ControlTarget {
public:
    // Begin an orderly shutdown (the SIGTERM path); returns at once.
    virtual void stop() = 0;
    // VM info and, with a vIOMMU, per-domain and per-endpoint counters (stat's body).
    virtual std::string stat() = 0;
    // The IOMMU mapping dump.
    virtual ControlResponse dump() = 0;
    // Post a fault report for `endpoint` on the virtio-iommu event queue.
    virtual ControlResponse inject_fault(std::uint32_t endpoint, bool write, std::uint64_t address) = 0;
    // Make the next `count` requests of a device fail (`target`: blkN or an endpoint id).
    virtual ControlResponse fail_next(std::string_view target, unsigned count) = 0;

protected:
    ~ControlTarget() = default;
};

inline constexpr unsigned kControlMaxFailNext = 1000;
inline constexpr std::uint64_t kControlDefaultFaultAddress = 0xdead0000;

// Runs a well-formed request (from parse_control_request) on `target`. `ping` answers
// "ok NAME PID running"; `stop` answers before the target is stopped (the caller sends the
// response, then calls stop()). Argument values are checked here (one-line errors).
ControlResponse dispatch_control_request(ControlTarget& target, const ControlRequest& request,
                                         std::string_view vm_name);

}  // namespace vmm
