#include "vmm/control/line_protocol.hpp"

#include <array>
#include <charconv>

namespace vmm {
namespace {

struct CommandShape {
    std::string_view name;
    std::size_t min_args;
    std::size_t max_args;
    std::string_view usage;
};

// Every command the server knows, with its argument count: checked here so that a target never
// sees a request of the wrong shape.
constexpr std::array<CommandShape, 6> kCommands{{
    {"ping", 0, 0, "ping"},
    {"stop", 0, 0, "stop"},
    {"stat", 0, 0, "stat"},
    {"dump", 0, 0, "dump"},
    {"fault", 1, 3, "fault EPID [read|write] [ADDRESS]"},
    {"fail-next", 1, 2, "fail-next TARGET [COUNT]"},
}};

std::string one_line(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c == '\n' || c == '\r') c = ' ';
    return out;
}

}  // namespace

std::variant<ControlRequest, std::string> parse_control_request(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() + 1 > kControlMaxRequest)
        return "request longer than " + std::to_string(kControlMaxRequest) + " bytes";
    for (char c : line) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte > 0x7e) return std::string("request contains control or non-ASCII bytes");
    }
    std::vector<std::string> words;
    for (std::size_t at = 0; at < line.size();) {
        if (line[at] == ' ') {
            ++at;
            continue;
        }
        std::size_t end = line.find(' ', at);
        if (end == std::string_view::npos) end = line.size();
        if (words.size() == kControlMaxWords)
            return "too many words in the request (at most " + std::to_string(kControlMaxWords) + ")";
        words.emplace_back(line.substr(at, end - at));
        at = end;
    }
    if (words.empty()) return std::string("empty request");
    ControlRequest request{words.front(), {words.begin() + 1, words.end()}};
    for (const CommandShape& shape : kCommands) {
        if (shape.name != request.command) continue;
        if (request.args.size() < shape.min_args || request.args.size() > shape.max_args)
            return "wrong number of arguments; usage: " + std::string(shape.usage);
        return request;
    }
    std::string known;
    for (const CommandShape& shape : kCommands) known += (known.empty() ? "" : ", ") + std::string(shape.name);
    // The unknown word is echoed bounded: it came from the peer.
    return "unknown command '" + request.command.substr(0, 32) + "'; the commands are: " + known;
}

std::string encode_control_request(const ControlRequest& request) {
    std::string out = request.command;
    for (const std::string& arg : request.args) out += ' ' + arg;
    return out + '\n';
}

std::string encode_control_response(const ControlResponse& response) {
    static constexpr std::string_view kTerminator = ".\n";
    static constexpr std::string_view kTruncated = "[truncated: responses stop at 64 KiB]\n";
    std::string out = response.ok ? "ok" : "error";
    std::string detail = one_line(response.detail);
    if (!detail.empty()) out += ' ' + detail.substr(0, 512);
    out += '\n';
    const std::size_t budget = kControlMaxResponse - kTerminator.size() - kTruncated.size();
    std::string_view body = response.body;
    while (!body.empty()) {
        std::size_t end = body.find('\n');
        std::string_view line = body.substr(0, end);
        body = end == std::string_view::npos ? std::string_view() : body.substr(end + 1);
        const std::size_t need = line.size() + 1 + (line.starts_with('.') ? 1 : 0);
        if (out.size() + need > budget) {
            out += kTruncated;
            break;
        }
        if (line.starts_with('.')) out += '.';
        out += line;
        out += '\n';
    }
    out += kTerminator;
    return out;
}

void ControlResponseDecoder::feed(std::string_view bytes) {
    if (done_ || !error_.empty()) return;
    total_ += bytes.size();
    if (total_ > kControlMaxResponse) {
        error_ = "response longer than " + std::to_string(kControlMaxResponse) + " bytes";
        return;
    }
    pending_.append(bytes);
    std::size_t start = 0;
    for (std::size_t nl; !done_ && error_.empty() && (nl = pending_.find('\n', start)) != std::string::npos;
         start = nl + 1)
        take_line(std::string_view(pending_).substr(start, nl - start));
    pending_.erase(0, start);
}

void ControlResponseDecoder::take_line(std::string_view line) {
    if (!have_status_) {
        have_status_ = true;
        auto rest = [&](std::size_t word) {
            return line.size() > word && line[word] == ' ' ? std::string(line.substr(word + 1)) : std::string();
        };
        if (line == "ok" || line.starts_with("ok ")) {
            response_.ok = true;
            response_.detail = rest(2);
        } else if (line == "error" || line.starts_with("error ")) {
            response_.ok = false;
            response_.detail = rest(5);
        } else {
            error_ = "malformed response (no ok/error status line)";
        }
        return;
    }
    if (line == ".") {
        done_ = true;
        return;
    }
    if (line.starts_with('.')) line.remove_prefix(1);
    response_.body.append(line);
    response_.body += '\n';
}

std::optional<std::uint64_t> parse_control_number(std::string_view text) {
    int base = 10;
    if (text.starts_with("0x") || text.starts_with("0X")) {
        text.remove_prefix(2);
        base = 16;
    }
    if (text.empty()) return std::nullopt;
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

}  // namespace vmm
