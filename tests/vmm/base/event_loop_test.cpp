#include "vmm/base/event_loop.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <stdexcept>
#include <thread>

namespace {

void signal_eventfd(int fd) {
    std::uint64_t one = 1;
    REQUIRE(::write(fd, &one, sizeof one) == sizeof one);
}

}  // namespace

TEST_CASE("EventLoop dispatches a readable fd to its handler and stops from another thread") {
    vmm::EventLoop loop;
    vmm::UniqueFd event(::eventfd(0, EFD_NONBLOCK));
    int calls = 0;
    loop.add(event.get(), "test", [&] {
        std::uint64_t v;
        CHECK(::read(event.get(), &v, sizeof v) == sizeof v);
        if (++calls == 2) loop.stop();
        else signal_eventfd(event.get());
    });
    signal_eventfd(event.get());
    loop.run();
    CHECK(calls == 2);
    CHECK(loop.stopped());

    vmm::EventLoop other;
    std::thread stopper([&] { other.stop(); });
    other.run();  // returns once stop() lands
    stopper.join();
}

TEST_CASE("EventLoop keeps running when a handler throws (the firewall)") {
    vmm::EventLoop loop;
    vmm::UniqueFd bad(::eventfd(0, EFD_NONBLOCK)), good(::eventfd(0, EFD_NONBLOCK));
    loop.add(bad.get(), "bad", [&] {
        std::uint64_t v;
        (void)::read(bad.get(), &v, sizeof v);
        signal_eventfd(good.get());
        throw std::runtime_error("device bug");
    });
    bool good_ran = false;
    loop.add(good.get(), "good", [&] {
        good_ran = true;
        loop.stop();
    });
    signal_eventfd(bad.get());
    loop.run();
    CHECK(good_ran);
}

TEST_CASE("EventLoop lets a handler remove itself, and try_add refuses unpollable files") {
    vmm::EventLoop loop;
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    vmm::UniqueFd reader(pipe_fds[0]), writer(pipe_fds[1]);
    int eofs = 0;
    loop.add(reader.get(), "pipe", [&] {
        char c;
        if (::read(reader.get(), &c, 1) == 0) {
            ++eofs;
            loop.remove(reader.get());
            loop.stop();
        }
    });
    writer.reset();  // EOF
    loop.run();
    CHECK(eofs == 1);

    vmm::UniqueFd null_fd(::open("/dev/null", O_RDONLY));
    CHECK_FALSE(loop.try_add(null_fd.get(), "null", [] {}));
}

TEST_CASE("SignalFd turns SIGTERM into a readable fd instead of killing the process") {
    vmm::SignalFd signals;
    CHECK_FALSE(signals.read_signal());
    REQUIRE(::pthread_kill(::pthread_self(), SIGTERM) == 0);
    auto signo = signals.read_signal();
    REQUIRE(signo);
    CHECK(*signo == SIGTERM);
    CHECK_FALSE(signals.read_signal());
}

TEST_CASE("EventLoop: a handler that removes itself and then throws is logged without touching freed memory") {
    // Run under ASan (make asan): the firewall's log line used to read the handler's name through
    // the map node the handler had just erased.
    vmm::EventLoop loop;
    vmm::UniqueFd doomed(::eventfd(0, EFD_NONBLOCK)), after(::eventfd(0, EFD_NONBLOCK));
    loop.add(doomed.get(), std::string("a handler whose name does not fit in a short string buffer"), [&] {
        loop.remove(doomed.get());
        signal_eventfd(after.get());
        throw std::runtime_error("failed after removing itself");
    });
    bool after_ran = false;
    loop.add(after.get(), "after", [&] {
        after_ran = true;
        loop.stop();
    });
    signal_eventfd(doomed.get());
    loop.run();
    CHECK(after_ran);
}

namespace {

// Stops `loop` after `rounds` dispatches of a descriptor that is always readable: a way to let a
// loop run a known number of rounds (no clock involved).
struct Ticker {
    vmm::UniqueFd fd{::eventfd(1, EFD_NONBLOCK)};  // never drained
    int ticks = 0;
    Ticker(vmm::EventLoop& loop, int rounds) {
        loop.add(fd.get(), "ticker", [&loop, this, rounds] {
            if (++ticks == rounds) loop.stop();
        });
    }
};

}  // namespace

TEST_CASE("EventLoop::pause: a descriptor that stays ready is not dispatched while paused, and is again after") {
    using namespace std::chrono_literals;
    vmm::UniqueFd stuck(::eventfd(1, EFD_NONBLOCK));  // ready for ever, as a listener that cannot accept
    {
        vmm::EventLoop loop;
        int calls = 0;
        loop.add(stuck.get(), "stuck", [&] {
            ++calls;
            loop.pause(stuck.get(), std::chrono::hours(1));
        });
        Ticker ticker(loop, 100);
        loop.run();
        CHECK(calls == 1);  // without the pause: once per round
        CHECK(loop.paused(stuck.get()));
        loop.remove(stuck.get());
        CHECK_FALSE(loop.paused(stuck.get()));
    }
    // A short pause ends: the loop watches the descriptor again by itself (waits for that state).
    vmm::EventLoop loop;
    int calls = 0;
    loop.add(stuck.get(), "stuck", [&] {
        if (++calls == 1) loop.pause(stuck.get(), 1ms);
        else loop.stop();
    });
    loop.run();
    CHECK(calls == 2);
    CHECK_FALSE(loop.paused(stuck.get()));
}
