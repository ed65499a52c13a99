// vmm/sandbox/exchange.hpp: the command and status files, and the exit statuses of lkvm sandbox.
#include "vmm/sandbox/exchange.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

using vmm::sandbox::GuestCommand;

TEST_CASE("command file: arguments with spaces, quotes, newlines and empty ones survive the round trip") {
    GuestCommand command{"/home/u/my dir", {"sh", "-c", "printf '%s\\n' \"$1\"; exit 7", "", "a\nb", "--"}};
    CHECK(vmm::sandbox::check_command(command).empty());
    auto decoded = vmm::sandbox::decode_command(vmm::sandbox::encode_command(command));
    REQUIRE(decoded);
    CHECK(decoded->workdir == command.workdir);
    CHECK(decoded->argv == command.argv);
}

TEST_CASE("command file: malformed contents are refused") {
    using namespace std::string_literals;
    for (const std::string& bad : {""s, "/w\0"s, "/w\0sh"s, "relative\0sh\0"s, "/w\0\0"s, "\0sh\0"s}) {
        CAPTURE(bad);
        CHECK(!vmm::sandbox::decode_command(bad));
    }
    CHECK(vmm::sandbox::decode_command("/w\0sh\0"s));
    // Too big, though well formed.
    std::string huge = "/w"s + '\0' + std::string(vmm::sandbox::kMaxCommandBytes, 'a') + '\0';
    CHECK(!vmm::sandbox::decode_command(huge));
}

TEST_CASE("check_command names what cannot be handed to the guest") {
    CHECK(vmm::sandbox::check_command({"/w", {}}).find("no command") != std::string::npos);
    CHECK(vmm::sandbox::check_command({"/w", {""}}).find("no command") != std::string::npos);
    CHECK(vmm::sandbox::check_command({"w", {"sh"}}).find("absolute") != std::string::npos);
    CHECK(vmm::sandbox::check_command({"/w", {"sh", std::string("a\0b", 3)}}).find("NUL") != std::string::npos);
    CHECK(vmm::sandbox::check_command({"/w", {"sh", std::string(vmm::sandbox::kMaxCommandBytes, 'x')}}).find("bytes") !=
          std::string::npos);
}

TEST_CASE("status file: 0-255 round trip; anything else is no status") {
    for (int status = 0; status <= 255; ++status)
        CHECK(vmm::sandbox::decode_status(vmm::sandbox::encode_status(status)) == status);
    CHECK(vmm::sandbox::decode_status("7") == 7);
    for (const char* bad : {"", "\n", "256\n", "-1\n", "7x\n", " 7\n", "7\n\n", "0007\n", "99999999999999999999"}) {
        CAPTURE(bad);
        CHECK(!vmm::sandbox::decode_status(bad));
    }
}

TEST_CASE("status_of_wait: an exit status as is, a signal as 128+N (as shells report it)") {
    auto status_of_child = [](auto body) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) body();
        int wait_status = 0;
        REQUIRE(::waitpid(pid, &wait_status, 0) == pid);
        return vmm::sandbox::status_of_wait(wait_status);
    };
    CHECK(status_of_child([] { ::_exit(7); }) == 7);
    CHECK(status_of_child([] { ::_exit(0); }) == 0);
    CHECK(status_of_child([] { ::_exit(255); }) == 255);
    CHECK(status_of_child([] {
              ::signal(SIGKILL, SIG_DFL);
              ::kill(::getpid(), SIGKILL);
              ::_exit(1);
          }) == 128 + SIGKILL);
}

TEST_CASE("status_of_exec_error: not found 127, found but not executable 126") {
    CHECK(vmm::sandbox::status_of_exec_error(ENOENT) == 127);
    CHECK(vmm::sandbox::status_of_exec_error(ENOTDIR) == 127);
    CHECK(vmm::sandbox::status_of_exec_error(EACCES) == 126);
    CHECK(vmm::sandbox::status_of_exec_error(ENOEXEC) == 126);
}
