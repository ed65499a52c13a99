#include "vmm/control/commands.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "vmm/base/error.hpp"
#include "vmm/control/client.hpp"
#include "vmm/control/dir.hpp"
#include "vmm/control/line_protocol.hpp"
#include "vmm/exit_status.hpp"

namespace vmm {
namespace {

ControlOutput error(int code, const std::string& message) { return {code, "", "lkvm: error: " + message + "\n"}; }

std::string row(const std::string& name, const std::string& pid, const std::string& state) {
    char line[160];
    std::snprintf(line, sizeof line, "%-24s %-8s %s\n", name.c_str(), pid.c_str(), state.c_str());
    return line;
}

// Removes DIR/NAME.sock if it is (still) a socket nobody listens on. Under the directory lock, so
// a VM claiming the name right now is never robbed of its fresh socket.
void remove_if_stale(const std::string& dir, const std::string& path) {
    ControlDirLock lock(dir);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
    if (probe_control_socket(path) == SocketLiveness::Stale) ::unlink(path.c_str());
}

ControlOutput list(const std::string& dir, const ControlTimeouts& timeouts) {
    ControlOutput result{kExitOk, row("NAME", "PID", "STATE"), ""};
    if (!check_control_dir(dir, false)) return result;
    for (const std::string& name : control_socket_names(dir)) {
        const ControlResult answer =
            control_exchange(dir, name, ControlRequest{"ping", {}}, std::chrono::milliseconds(timeouts.list_ping_ms));
        if (const auto* response = std::get_if<ControlResponse>(&answer)) {
            // "NAME PID STATE" from the VM itself.
            const std::string& detail = response->detail;
            const std::size_t a = detail.find(' ');
            const std::size_t b = a == std::string::npos ? a : detail.find(' ', a + 1);
            if (response->ok && b != std::string::npos)
                result.out += row(name, detail.substr(a + 1, b - a - 1), detail.substr(b + 1));
            else result.out += row(name, "-", "unknown");
            continue;
        }
        const ControlFailure& failure = std::get<ControlFailure>(answer);
        switch (failure.kind) {
            case ControlFailure::Kind::Stale: remove_if_stale(dir, control_socket_path(dir, name)); break;
            case ControlFailure::Kind::NoVm: break;  // gone meanwhile
            case ControlFailure::Kind::Timeout: result.out += row(name, "-", "not-responding"); break;
            case ControlFailure::Kind::Protocol: result.out += row(name, "-", "stopping"); break;
            case ControlFailure::Kind::Permission:
            case ControlFailure::Kind::System:
                result.out += row(name, "-", "error");
                result.err += "lkvm: warning: " + failure.message + "\n";
                break;
        }
    }
    return result;
}

ControlOutput exchange(const std::string& dir, const std::string& name, const ControlRequest& request,
                       const ControlTimeouts& timeouts, ControlResponse* response) {
    const ControlResult answer = control_exchange(dir, name, request, std::chrono::milliseconds(timeouts.answer_ms));
    if (const auto* failure = std::get_if<ControlFailure>(&answer)) return error(kExitFailure, failure->message);
    *response = std::get<ControlResponse>(answer);
    if (!response->ok) return error(kExitFailure, name + ": " + response->detail);
    return {kExitOk, "", ""};
}

ControlOutput stop(const std::string& dir, const std::string& name, const ControlTimeouts& timeouts) {
    ControlResponse response;
    ControlOutput result = exchange(dir, name, ControlRequest{"stop", {}}, timeouts, &response);
    if (result.code != kExitOk) return result;
    // Acknowledged. The VM removes its socket last thing before it exits: wait for that.
    const std::string path = control_socket_path(dir, name);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeouts.stop_wait_ms);
    while (std::chrono::steady_clock::now() < deadline) {
        if (probe_control_socket(path) != SocketLiveness::Live) return {kExitOk, name + ": stopped\n", ""};
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return {kExitOk, name + ": stop acknowledged; the VM is still shutting down\n", ""};
}

// `lkvm stop --all`: every VM with a socket, one after the other; the worst status wins.
ControlOutput stop_all(const std::string& dir, const ControlTimeouts& timeouts) {
    ControlOutput result{kExitOk, "", ""};
    if (!check_control_dir(dir, false)) return result;  // no directory: no VMs
    for (const std::string& name : control_socket_names(dir)) {
        // A socket left by a VM that died is no VM to stop (`lkvm list` removes it).
        if (probe_control_socket(control_socket_path(dir, name)) != SocketLiveness::Live) continue;
        ControlOutput one = stop(dir, name, timeouts);
        result.code = std::max(result.code, one.code);
        result.out += one.out;
        result.err += one.err;
    }
    return result;
}

}  // namespace

ControlOutput run_control_command(const ControlCommand& command, const std::string& dir, ControlTimeouts timeouts) {
    try {
        if (command.kind == ControlCommand::Kind::List) return list(dir, timeouts);
        if (command.kind == ControlCommand::Kind::Stop && command.all) return stop_all(dir, timeouts);
        if (!valid_vm_name(command.name))
            return error(kExitUsage, "'" + command.name.substr(0, 80) + "' is not a VM name: " + vm_name_rule());
        if (!check_control_dir(dir, false))
            return error(kExitFailure, "no VM named '" + command.name + "'; `lkvm list` shows the running ones");
        ControlRequest request;
        switch (command.kind) {
            case ControlCommand::Kind::Stop: return stop(dir, command.name, timeouts);
            case ControlCommand::Kind::Stat: request = {"stat", {}}; break;
            case ControlCommand::Kind::Debug: {
                static const char* const kUsage =
                    "usage: lkvm debug NAME dump | fault EPID [read|write] [ADDRESS] | fail-next TARGET [COUNT]";
                if (command.words.empty() ||
                    (command.words[0] != "dump" && command.words[0] != "fault" && command.words[0] != "fail-next"))
                    return error(kExitUsage,
                                 command.words.empty()
                                     ? std::string(kUsage)
                                     : "unknown debug command '" + command.words[0].substr(0, 40) + "'; " + kUsage);
                std::string line;
                for (const std::string& word : command.words) line += (line.empty() ? "" : " ") + word;
                auto parsed = parse_control_request(line);
                if (auto* problem = std::get_if<std::string>(&parsed)) return error(kExitUsage, "debug: " + *problem);
                request = std::get<ControlRequest>(parsed);
                break;
            }
            case ControlCommand::Kind::List: break;
        }
        ControlResponse response;
        ControlOutput result = exchange(dir, command.name, request, timeouts, &response);
        if (result.code != kExitOk) return result;
        if (!response.detail.empty()) result.out += response.detail + "\n";
        result.out += response.body;
        return result;
    } catch (const SetupError& e) {
        return error(kExitFailure, e.what());
    }
}

}  // namespace vmm
