// devices::FdOutput, the stdout writer of the UART and the virtio-console: a
// reader that stopped reading must not keep the writing thread from a teardown.
#include "devices/fd_output.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "vmm/base/unique_fd.hpp"

namespace {

using namespace std::chrono_literals;

// A pipe whose write end is full and whose reader never reads (a CI runner that stopped).
struct FullPipe {
    vmm::UniqueFd read_end, write_end;
    FullPipe() {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
        const int flags = ::fcntl(fds[1], F_GETFL);
        REQUIRE(::fcntl(fds[1], F_SETFL, flags | O_NONBLOCK) == 0);
        const std::vector<char> junk(4096, 'j');
        while (::write(fds[1], junk.data(), junk.size()) > 0) {
        }
        REQUIRE(::fcntl(fds[1], F_SETFL, flags) == 0);  // blocking again, as a terminal's stdout is
    }
    // Lets a writer that is still blocked go (so the test can fail instead of hanging).
    void drain() {
        ::fcntl(read_end.get(), F_SETFL, O_NONBLOCK);
        char buffer[4096];
        while (::read(read_end.get(), buffer, sizeof buffer) > 0) {
        }
    }
};

// The vCPU kick: a handler without SA_RESTART, so blocking calls return EINTR.
void ignore_signal(int) {}
struct KickSignal {
    struct sigaction old {};
    KickSignal() {
        struct sigaction action {};
        action.sa_handler = ignore_signal;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGUSR2, &action, &old);
    }
    ~KickSignal() { ::sigaction(SIGUSR2, &old, nullptr); }
};

// Runs `write` on a thread; kicks it with SIGUSR2 every few milliseconds when `kick`. True if it
// returned within `limit`: a hang guard far beyond what the write needs (it ends as soon as the
// write returns), so a loaded machine cannot fail it; only a write that never returns can.
template <class F>
bool returns_within(std::chrono::milliseconds limit, bool kick, FullPipe& pipe, F write) {
    std::atomic<bool> done{false};
    std::thread writer([&] {
        write();
        done = true;
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < deadline) {
        if (kick) ::pthread_kill(writer.native_handle(), SIGUSR2);
        std::this_thread::sleep_for(5ms);
    }
    const bool returned = done;
    pipe.drain();
    writer.join();
    return returned;
}

}  // namespace

TEST_CASE("FdOutput gives a kicked thread back at once while nobody reads stdout") {
    KickSignal signal;
    FullPipe pipe;
    // A stall limit far beyond the test's patience: only the kick can end the write.
    devices::FdOutput out(pipe.write_end.get(), std::chrono::minutes(10));
    const std::string text(100, 'x');
    const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    CHECK(returns_within(60'000ms, true, pipe, [&] { out.write(bytes); }));
    CHECK(out.dropped_bytes() == text.size());
}

TEST_CASE("FdOutput waits at most its stall limit, then drops without waiting until the reader moves") {
    FullPipe pipe;
    devices::FdOutput out(pipe.write_end.get(), 50ms);
    const std::string text(10, 'y');
    const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    CHECK(returns_within(60'000ms, false, pipe, [&] {
        out.write(bytes);        // waits 50 ms
        out.write_bytes(bytes);  // stalled: drops at once
    }));
    CHECK(out.dropped_bytes() == 2 * text.size());
    // The pipe was drained: output flows again.
    out.write(bytes);
    CHECK(out.dropped_bytes() == 2 * text.size());
    char back[16] = {};
    CHECK(::read(pipe.read_end.get(), back, sizeof back) == static_cast<ssize_t>(text.size()));
}

TEST_CASE("FdOutput writes everything to a reader that keeps up, in pieces") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    vmm::UniqueFd read_end(fds[0]), write_end(fds[1]);
    devices::FdOutput out(write_end.get());
    const std::string text(200'000, 'z');  // far more than a pipe holds
    std::string got;
    std::thread reader([&] {
        char buffer[8192];
        ssize_t n;
        while ((n = ::read(read_end.get(), buffer, sizeof buffer)) > 0) got.append(buffer, static_cast<std::size_t>(n));
    });
    out.write({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
    write_end.reset();
    reader.join();
    CHECK(got == text);
    CHECK(out.dropped_bytes() == 0);
}

TEST_CASE("FdOutput drops (counted) once the reader is gone") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    vmm::UniqueFd read_end(fds[0]), write_end(fds[1]);
    read_end.reset();
    struct sigaction ignore {
    }, old{};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &old);  // lkvm blocks SIGPIPE (vmm::SignalFd)
    devices::FdOutput out(write_end.get());
    const std::uint8_t byte = 'q';
    out.write_bytes({&byte, 1});
    out.write_bytes({&byte, 1});
    ::sigaction(SIGPIPE, &old, nullptr);
    CHECK(out.dropped_bytes() == 2);
}
