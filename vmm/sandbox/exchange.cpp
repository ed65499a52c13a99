#include "vmm/sandbox/exchange.hpp"

#include <sys/wait.h>

#include <cerrno>

namespace vmm::sandbox {

std::string check_command(const GuestCommand& command) {
    if (command.argv.empty() || command.argv.front().empty()) return "no command to run";
    if (command.workdir.empty() || command.workdir.front() != '/')
        return "the working directory is not an absolute path";
    std::size_t total = command.workdir.size() + 1;
    for (const std::string& field : command.argv) total += field.size() + 1;
    if (command.workdir.find('\0') != std::string::npos) return "the working directory holds a NUL byte";
    for (const std::string& arg : command.argv)
        if (arg.find('\0') != std::string::npos) return "an argument holds a NUL byte";
    if (total > kMaxCommandBytes)
        return "the command and its arguments take " + std::to_string(total) + " bytes; at most " +
               std::to_string(kMaxCommandBytes) + " fit";
    return {};
}

std::string encode_command(const GuestCommand& command) {
    std::string out = command.workdir;
    out.push_back('\0');
    for (const std::string& arg : command.argv) {
        out += arg;
        out.push_back('\0');
    }
    return out;
}

std::optional<GuestCommand> decode_command(std::string_view bytes) {
    if (bytes.size() > kMaxCommandBytes || bytes.empty() || bytes.back() != '\0') return std::nullopt;
    GuestCommand command;
    bool first = true;
    for (std::size_t start = 0; start < bytes.size();) {
        const std::size_t end = bytes.find('\0', start);  // found: the last byte is a NUL
        std::string field(bytes.substr(start, end - start));
        if (first) command.workdir = std::move(field);
        else command.argv.push_back(std::move(field));
        first = false;
        start = end + 1;
    }
    if (!check_command(command).empty()) return std::nullopt;
    return command;
}

std::string encode_status(int status) { return std::to_string(status) + "\n"; }

std::optional<int> decode_status(std::string_view bytes) {
    if (!bytes.empty() && bytes.back() == '\n') bytes.remove_suffix(1);
    if (bytes.empty() || bytes.size() > 3) return std::nullopt;
    int value = 0;
    for (char c : bytes) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    if (value > 255) return std::nullopt;
    return value;
}

int status_of_wait(int wait_status) {
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return kExitSignalBase + WTERMSIG(wait_status);
    return kExitSandboxFailed;
}

int status_of_exec_error(int error) { return error == ENOENT || error == ENOTDIR ? kExitNotFound : kExitNotExecutable; }

}  // namespace vmm::sandbox
