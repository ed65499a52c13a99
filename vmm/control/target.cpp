#include "vmm/control/target.hpp"

#include <unistd.h>

#include <limits>
#include <optional>

namespace vmm {
namespace {

// The peer's words are echoed back bounded.
std::string shown(std::string_view word) { return "'" + std::string(word.substr(0, 40)) + "'"; }

ControlResponse fault(ControlTarget& target, const ControlRequest& request) {
    const auto endpoint = parse_control_number(request.args[0]);
    if (!endpoint || *endpoint > std::numeric_limits<std::uint32_t>::max())
        return ControlResponse::failure("fault: " + shown(request.args[0]) +
                                        " is not an endpoint id (0 to 4294967295)");
    std::optional<bool> write;
    std::optional<std::uint64_t> address;
    for (std::size_t i = 1; i < request.args.size(); ++i) {
        const std::string& arg = request.args[i];
        if ((arg == "read" || arg == "write") && !write) {
            write = arg == "write";
        } else if (auto value = parse_control_number(arg); value && !address) {
            address = value;
        } else {
            return ControlResponse::failure("fault: unexpected " + shown(arg) +
                                            "; usage: fault EPID [read|write] [ADDRESS]");
        }
    }
    return target.inject_fault(static_cast<std::uint32_t>(*endpoint), write.value_or(false),
                               address.value_or(kControlDefaultFaultAddress));
}

ControlResponse fail_next(ControlTarget& target, const ControlRequest& request) {
    unsigned count = 1;
    if (request.args.size() > 1) {
        const auto value = parse_control_number(request.args[1]);
        if (!value || *value == 0 || *value > kControlMaxFailNext)
            return ControlResponse::failure("fail-next: COUNT " + shown(request.args[1]) + " is not in 1.." +
                                            std::to_string(kControlMaxFailNext));
        count = static_cast<unsigned>(*value);
    }
    return target.fail_next(request.args[0], count);
}

}  // namespace

ControlResponse dispatch_control_request(ControlTarget& target, const ControlRequest& request,
                                         std::string_view vm_name) {
    const std::string& c = request.command;
    if (c == "ping")
        return ControlResponse::success(std::string(vm_name) + " " + std::to_string(::getpid()) + " running");
    if (c == "stop") return ControlResponse::success("stopping " + std::string(vm_name));
    if (c == "stat") return ControlResponse::success({}, target.stat());
    if (c == "dump") return target.dump();
    if (c == "fault") return fault(target, request);
    if (c == "fail-next") return fail_next(target, request);
    return ControlResponse::failure("unknown command " + shown(c));  // parse_control_request let it through
}

}  // namespace vmm
