// libFuzzer target: the control channel's untrusted input on both ends. The bytes are cut into
// request lines (each parsed and, when well-formed, dispatched on a fake target, as the server
// does) and also fed to the client's response decoder in pieces. Invariants: no crash, parsed
// requests re-encode to a line that parses to the same request, responses stay bounded.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "vmm/control/line_protocol.hpp"
#include "vmm/control/target.hpp"

namespace {

struct NullTarget final : vmm::ControlTarget {
    void stop() override {}
    std::string stat() override { return "vm fuzz\n"; }
    vmm::ControlResponse dump() override { return vmm::ControlResponse::success(); }
    vmm::ControlResponse inject_fault(std::uint32_t, bool, std::uint64_t) override {
        return vmm::ControlResponse::success();
    }
    vmm::ControlResponse fail_next(std::string_view, unsigned count) override {
        if (count == 0 || count > vmm::kControlMaxFailNext) std::abort();  // the dispatcher bounds it
        return vmm::ControlResponse::success();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    NullTarget target;
    for (std::size_t at = 0; at <= input.size();) {
        std::size_t end = input.find('\n', at);
        if (end == std::string_view::npos) end = input.size();
        auto parsed = vmm::parse_control_request(input.substr(at, end - at));
        if (auto* request = std::get_if<vmm::ControlRequest>(&parsed)) {
            std::string wire = vmm::encode_control_request(*request);
            wire.pop_back();
            auto again = vmm::parse_control_request(wire);
            if (!std::holds_alternative<vmm::ControlRequest>(again) || std::get<vmm::ControlRequest>(again) != *request)
                std::abort();
            const vmm::ControlResponse response = vmm::dispatch_control_request(target, *request, "fuzz");
            if (vmm::encode_control_response(response).size() > vmm::kControlMaxResponse) std::abort();
        }
        at = end + 1;
    }
    vmm::ControlResponseDecoder decoder;
    const std::size_t piece = size == 0 ? 1 : 1 + data[0] % 64;
    for (std::size_t at = 0; at < input.size(); at += piece) decoder.feed(input.substr(at, piece));
    if (decoder.done() && !decoder.error().empty()) std::abort();
    // A body the decoder accepted round-trips through the encoder.
    if (decoder.done()) {
        vmm::ControlResponseDecoder back;
        back.feed(vmm::encode_control_response(decoder.response()));
        if (!back.done() || (back.response().body != decoder.response().body && decoder.response().body.size() < 60000))
            std::abort();
    }
    return 0;
}
