// The control channel's wire format: request parsing (malformed, oversized, unknown), response
// encoding with dot-stuffing and truncation, and the client's incremental decoder.
#include "vmm/control/line_protocol.hpp"

#include <doctest/doctest.h>

#include <string>

#include "vmm/control/target.hpp"

namespace {

vmm::ControlRequest ok(std::string_view line) {
    auto parsed = vmm::parse_control_request(line);
    auto* request = std::get_if<vmm::ControlRequest>(&parsed);
    if (!request) FAIL("expected a request, got: " << std::get<std::string>(parsed));
    return *request;
}

std::string error_of(std::string_view line) {
    auto parsed = vmm::parse_control_request(line);
    auto* error = std::get_if<std::string>(&parsed);
    if (!error) FAIL("expected an error for '" << std::string(line) << "'");
    return *error;
}

vmm::ControlResponse roundtrip(const vmm::ControlResponse& response, std::size_t chunk = 1) {
    const std::string wire = vmm::encode_control_response(response);
    vmm::ControlResponseDecoder decoder;
    for (std::size_t at = 0; at < wire.size(); at += chunk) decoder.feed(std::string_view(wire).substr(at, chunk));
    REQUIRE(decoder.error().empty());
    REQUIRE(decoder.done());
    return decoder.response();
}

}  // namespace

TEST_CASE("control requests: words separated by spaces, the command's arity checked") {
    CHECK(ok("stat") == vmm::ControlRequest{"stat", {}});
    CHECK(ok("  fault   65537 write 0x1000 ") == vmm::ControlRequest{"fault", {"65537", "write", "0x1000"}});
    CHECK(ok("fail-next blk0 3\r") == vmm::ControlRequest{"fail-next", {"blk0", "3"}});
    CHECK(vmm::encode_control_request({"fault", {"1", "read"}}) == "fault 1 read\n");
    CHECK(ok(vmm::encode_control_request({"fault", {"1", "read"}}).substr(0, 12)) ==
          vmm::ControlRequest{"fault", {"1", "read"}});

    CHECK(error_of("").find("empty") != std::string::npos);
    CHECK(error_of("    ").find("empty") != std::string::npos);
    CHECK(error_of("stat extra").find("usage: stat") != std::string::npos);
    CHECK(error_of("fault").find("usage: fault EPID") != std::string::npos);
    CHECK(error_of("fault 1 2 3 4").find("usage") != std::string::npos);
    const std::string unknown = error_of("reboot now");
    CHECK(unknown.find("unknown command 'reboot'") != std::string::npos);
    CHECK(unknown.find("fail-next") != std::string::npos);
}

TEST_CASE("control requests: hostile bytes are errors, never crashes") {
    CHECK(error_of(std::string(vmm::kControlMaxRequest, 'a')).find("longer than") != std::string::npos);
    CHECK(error_of(std::string("stat\0", 5)).find("control") != std::string::npos);
    CHECK(error_of("stat\tx").find("control") != std::string::npos);
    CHECK(error_of("st\xc3\xa4t").find("non-ASCII") != std::string::npos);
    CHECK(error_of("fault 1 2 3 4 5 6 7 8 9").find("too many words") != std::string::npos);
    // The unknown command is echoed bounded.
    CHECK(error_of(std::string(900, 'x')).size() < 200);
    // Every byte value in every position of a short line: parse or error, nothing else.
    for (int b = 0; b < 256; ++b) {
        std::string line = "fault 1 ";
        line += static_cast<char>(b);
        (void)vmm::parse_control_request(line);
    }
}

TEST_CASE("control responses: status line, dot-stuffed body, terminator") {
    CHECK(vmm::encode_control_response(vmm::ControlResponse::success()) == "ok\n.\n");
    CHECK(vmm::encode_control_response(vmm::ControlResponse::failure("no\nway")) == "error no way\n.\n");
    CHECK(vmm::encode_control_response({true, "x", "a\n.b\n.\nc"}) == "ok x\na\n..b\n..\nc\n.\n");

    const vmm::ControlResponse body{true, "detail here", "line 1\n.hidden\n.\n\nlast\n"};
    CHECK(roundtrip(body) == body);
    CHECK(roundtrip(body, 7) == body);
    CHECK(roundtrip(vmm::ControlResponse::failure("bad thing")) == vmm::ControlResponse::failure("bad thing"));
}

TEST_CASE("control responses: a huge body is cut at a line and says so") {
    std::string body;
    for (int i = 0; i < 20000; ++i) body += "mapping line " + std::to_string(i) + "\n";
    const std::string wire = vmm::encode_control_response({true, "", body});
    CHECK(wire.size() <= vmm::kControlMaxResponse);
    const vmm::ControlResponse back = roundtrip({true, "", body}, 4096);
    const std::string marker = "[truncated: responses stop at 64 KiB]\n";
    CHECK(back.body.ends_with(marker));
    CHECK(body.starts_with(back.body.substr(0, back.body.size() - marker.size())));
}

TEST_CASE("control response decoder: malformed, oversized and trailing input") {
    vmm::ControlResponseDecoder garbage;
    garbage.feed("HTTP/1.1 200 OK\n");
    CHECK_FALSE(garbage.error().empty());
    CHECK_FALSE(garbage.done());

    vmm::ControlResponseDecoder flood;
    flood.feed("ok\n");
    for (int i = 0; i < 100 && flood.error().empty(); ++i) flood.feed(std::string(1024, 'x'));
    CHECK(flood.error().find("longer than") != std::string::npos);

    vmm::ControlResponseDecoder partial;
    partial.feed("ok fine\nbody");
    CHECK_FALSE(partial.done());
    partial.feed("\n.\ntrailing junk\n");
    CHECK(partial.done());
    CHECK(partial.response() == vmm::ControlResponse{true, "fine", "body\n"});
}

TEST_CASE("control numbers: decimal or 0x-hex, nothing else") {
    CHECK(vmm::parse_control_number("65537") == 65537u);
    CHECK(vmm::parse_control_number("0x10001") == 0x10001u);
    CHECK(vmm::parse_control_number("0XfF") == 255u);
    CHECK_FALSE(vmm::parse_control_number(""));
    CHECK_FALSE(vmm::parse_control_number("0x"));
    CHECK_FALSE(vmm::parse_control_number("-1"));
    CHECK_FALSE(vmm::parse_control_number("12abc"));
    CHECK_FALSE(vmm::parse_control_number("99999999999999999999999"));
}

namespace {

struct RecordingTarget final : vmm::ControlTarget {
    int stops = 0;
    std::uint32_t endpoint = 0;
    bool write = false;
    std::uint64_t address = 0;
    std::string fail_target;
    unsigned fail_count = 0;
    void stop() override { ++stops; }
    std::string stat() override { return "vm test\n"; }
    vmm::ControlResponse dump() override { return vmm::ControlResponse::success({}, "dump\n"); }
    vmm::ControlResponse inject_fault(std::uint32_t ep, bool w, std::uint64_t addr) override {
        endpoint = ep;
        write = w;
        address = addr;
        return vmm::ControlResponse::success("fault");
    }
    vmm::ControlResponse fail_next(std::string_view target, unsigned count) override {
        fail_target = target;
        fail_count = count;
        return vmm::ControlResponse::success("armed");
    }
};

}  // namespace

TEST_CASE("control dispatch: arguments are checked before the target sees them") {
    RecordingTarget t;
    auto run = [&](std::string_view line) { return vmm::dispatch_control_request(t, ok(line), "vm1"); };
    CHECK(run("ping").detail.starts_with("vm1 "));
    CHECK(run("ping").detail.ends_with(" running"));
    CHECK(run("stop").ok);
    CHECK(t.stops == 0);  // the server stops the target after answering
    CHECK(run("stat").body == "vm test\n");

    CHECK(run("fault 0x10001").ok);
    CHECK(t.endpoint == 0x10001);
    CHECK_FALSE(t.write);
    CHECK(t.address == vmm::kControlDefaultFaultAddress);
    CHECK(run("fault 7 0x2000 write").ok);
    CHECK(t.write);
    CHECK(t.address == 0x2000);
    CHECK_FALSE(run("fault 4294967296").ok);
    CHECK_FALSE(run("fault x").ok);
    CHECK_FALSE(run("fault 1 read read").ok);
    CHECK_FALSE(run("fault 1 exec").ok);

    CHECK(run("fail-next blk0").ok);
    CHECK(t.fail_count == 1);
    CHECK(run("fail-next 65537 5").ok);
    CHECK(t.fail_target == "65537");
    CHECK(t.fail_count == 5);
    CHECK_FALSE(run("fail-next blk0 0").ok);
    CHECK_FALSE(run("fail-next blk0 100000").ok);
}
