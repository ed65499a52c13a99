// The control channel's wire format (`lkvm list/stop/stat/debug` talking to a running lkvm over its
// unix socket). One connection carries one exchange:
//
//   request   one line of printable ASCII words separated by spaces, ending in '\n'
//             (at most kControlMaxRequest bytes including the newline): COMMAND [ARG...]
//   response  a status line, "ok[ DETAIL]" or "error MESSAGE", then the body's lines, then a line
//             holding a single "." (the terminator). A body line that starts with '.' gets one more
//             '.' in front (SMTP's dot-stuffing), so no body line can look like the terminator.
//             At most kControlMaxResponse bytes; the server truncates longer bodies and says so.
//
// Commands: ping, stop, stat, dump, fault EPID [read|write] [ADDRESS], fail-next TARGET [COUNT].
// Everything here is pure string work: both ends treat the peer's bytes as hostile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace vmm {

inline constexpr std::size_t kControlMaxRequest = 1024;
inline constexpr std::size_t kControlMaxResponse = 64 * 1024;
inline constexpr std::size_t kControlMaxWords = 8;

struct ControlRequest {
    std::string command;
    std::vector<std::string> args;
    friend bool operator==(const ControlRequest&, const ControlRequest&) = default;
};

// `line` without its '\n' (a trailing '\r' is tolerated). Returns the request or why it is
// malformed: empty, too long, control or non-ASCII bytes, too many words, unknown command, or the
// wrong number of arguments for the command (argument values are checked by the dispatcher).
std::variant<ControlRequest, std::string> parse_control_request(std::string_view line);
// "COMMAND ARG...\n".
std::string encode_control_request(const ControlRequest& request);

struct ControlResponse {
    bool ok = true;
    std::string detail;  // the rest of the status line (one line; newlines become spaces)
    std::string body;    // any text; a missing final newline is added on the wire
    friend bool operator==(const ControlResponse&, const ControlResponse&) = default;

    static ControlResponse success(std::string detail = {}, std::string body = {}) {
        return {true, std::move(detail), std::move(body)};
    }
    static ControlResponse failure(std::string message) { return {false, std::move(message), {}}; }
};

// The response on the wire, at most kControlMaxResponse bytes (a longer body is cut at a line
// boundary and ends with a "[truncated: ...]" line).
std::string encode_control_response(const ControlResponse& response);

// Client side: feed bytes as they arrive; done() once the terminator line was seen. Malformed
// input (no status line, an unknown status word, more than kControlMaxResponse bytes) makes
// error() non-empty; bytes after the terminator are ignored.
class ControlResponseDecoder {
public:
    void feed(std::string_view bytes);
    bool done() const { return done_; }
    const std::string& error() const { return error_; }
    const ControlResponse& response() const { return response_; }

private:
    void take_line(std::string_view line);

    std::string pending_;
    std::size_t total_ = 0;
    bool have_status_ = false;
    bool done_ = false;
    std::string error_;
    ControlResponse response_;
};

// Argument parsers shared by the dispatcher and the CLI: whole numbers in decimal or 0x-hex.
std::optional<std::uint64_t> parse_control_number(std::string_view text);

}  // namespace vmm
