// The control channel over real unix sockets in a temporary directory: the per-user directory
// rules, claiming a name (live, stale, foreign files), the server on an EventLoop thread with the
// client and the CLI commands, peer credentials, bounded clients and hostile bytes.
#include "vmm/control/server.hpp"

#include <doctest/doctest.h>

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/support/descriptor_limit.hpp"
#include "vmm/base/error.hpp"
#include "vmm/control/client.hpp"
#include "vmm/control/commands.hpp"
#include "vmm/control/dir.hpp"

namespace {

using namespace std::chrono_literals;

// A fresh 0700 directory under /tmp, removed with everything in it.
struct TempDir {
    std::string path;
    TempDir() {
        char name[] = "/tmp/lkvm-control-test-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string sub(const std::string& name) const { return path + "/" + name; }
};

struct FakeVm final : vmm::ControlTarget {
    std::atomic<int> stops{0};
    void stop() override { ++stops; }
    std::string stat() override { return "vm fake pid=1\n.dotted line\n"; }
    vmm::ControlResponse dump() override { return vmm::ControlResponse::success({}, "iommu: nothing\n"); }
    vmm::ControlResponse inject_fault(std::uint32_t, bool, std::uint64_t) override {
        return vmm::ControlResponse::failure("no vIOMMU");
    }
    vmm::ControlResponse fail_next(std::string_view, unsigned) override {
        return vmm::ControlResponse::success("armed");
    }
};

// A ControlServer on an EventLoop running in its own thread for the test's duration.
struct Served {
    vmm::EventLoop loop;
    FakeVm vm;
    vmm::ControlSocket socket;
    vmm::ControlServer server;
    std::thread thread;
    Served(const std::string& dir, const std::string& name, vmm::ControlServerOptions options = {})
        : socket(dir, name), server(loop, socket, vm, options) {
        thread = std::thread([this] { loop.run(); });
    }
    ~Served() {
        loop.stop();
        thread.join();
    }
};

// A raw client: connect, send `bytes` (optionally half-close), read all until EOF (1 s at most).
std::string raw_exchange(const std::string& path, std::string_view bytes, bool half_close = true) {
    vmm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    // A peer may close before reading everything (oversized requests): ignore send errors.
    for (std::size_t sent = 0; sent < bytes.size();) {
        const ssize_t n = ::send(fd.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
    }
    if (half_close) ::shutdown(fd.get(), SHUT_WR);
    std::string out;
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd.get(), buffer, sizeof buffer, 0)) > 0;)
        out.append(buffer, static_cast<std::size_t>(n));
    return out;
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    return st.st_mode;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// Leaves a socket file behind with nobody listening, as a VM killed with SIGKILL does.
void make_stale_socket(const std::string& path) {
    vmm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
}

}  // namespace

TEST_CASE("VM names: letters, digits, '-', '_', '.', 1 to 64 of them") {
    CHECK(vmm::valid_vm_name("guest-1234"));
    CHECK(vmm::valid_vm_name("a.b_c-D9"));
    CHECK(vmm::valid_vm_name(std::string(64, 'x')));
    CHECK_FALSE(vmm::valid_vm_name(""));
    CHECK_FALSE(vmm::valid_vm_name(std::string(65, 'x')));
    CHECK_FALSE(vmm::valid_vm_name("."));
    CHECK_FALSE(vmm::valid_vm_name(".."));
    CHECK_FALSE(vmm::valid_vm_name("../etc"));
    CHECK_FALSE(vmm::valid_vm_name("a b"));
    CHECK_FALSE(vmm::valid_vm_name("vm/1"));
    CHECK_FALSE(vmm::valid_vm_name("vm\n"));
}

TEST_CASE("control directory: XDG_RUNTIME_DIR/lkvm, else HOME/.lkvm") {
    const char* old_xdg = std::getenv("XDG_RUNTIME_DIR");
    const std::string saved_xdg = old_xdg ? old_xdg : "";
    const std::string saved_home = std::getenv("HOME") ? std::getenv("HOME") : "";
    ::setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    CHECK(vmm::control_dir_from_env() == "/run/user/1000/lkvm");
    ::setenv("XDG_RUNTIME_DIR", "relative", 1);  // not absolute: ignored
    ::setenv("HOME", "/home/me", 1);
    CHECK(vmm::control_dir_from_env() == "/home/me/.lkvm");
    ::unsetenv("XDG_RUNTIME_DIR");
    CHECK(vmm::control_dir_from_env() == "/home/me/.lkvm");
    if (old_xdg) ::setenv("XDG_RUNTIME_DIR", saved_xdg.c_str(), 1);
    ::setenv("HOME", saved_home.c_str(), 1);
}

TEST_CASE("control directory: created 0700; refused when group/world-writable, not a directory or foreign") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    CHECK_FALSE(vmm::check_control_dir(dir, false));  // missing: nothing runs, nothing created
    CHECK_FALSE(exists(dir));
    const mode_t old_umask = ::umask(0);  // even a permissive umask gives 0700
    CHECK(vmm::check_control_dir(dir, true));
    ::umask(old_umask);
    CHECK((mode_of(dir) & 07777) == 0700);

    REQUIRE(::chmod(dir.c_str(), 0770) == 0);
    CHECK_THROWS_WITH_AS(vmm::check_control_dir(dir, false), doctest::Contains("writable by group or others"),
                         vmm::SetupError);
    CHECK_THROWS_AS(vmm::ControlSocket(dir, "vm"), vmm::SetupError);
    REQUIRE(::chmod(dir.c_str(), 0702) == 0);
    CHECK_THROWS_AS(vmm::check_control_dir(dir, true), vmm::SetupError);
    REQUIRE(::chmod(dir.c_str(), 0755) == 0);  // readable by others is fine: sockets are 0600
    CHECK(vmm::check_control_dir(dir, false));

    const std::string link = tmp.sub("link");
    REQUIRE(::symlink(dir.c_str(), link.c_str()) == 0);
    CHECK_THROWS_WITH_AS(vmm::check_control_dir(link, true), doctest::Contains("not a directory"), vmm::SetupError);

    if (::geteuid() == 0) {  // root can make a directory that belongs to someone else
        const std::string foreign = tmp.sub("foreign");
        REQUIRE(::mkdir(foreign.c_str(), 0700) == 0);
        REQUIRE(::chown(foreign.c_str(), 65534, 65534) == 0);
        CHECK_THROWS_WITH_AS(vmm::check_control_dir(foreign, true), doctest::Contains("belongs to uid 65534"),
                             vmm::SetupError);
    }
    CHECK_THROWS_WITH_AS(vmm::control_socket_path(dir, std::string(64, 'n') + std::string(40, 'm')),
                         doctest::Contains("longer than a unix socket allows"), vmm::SetupError);
}

TEST_CASE("ControlSocket: 0600 socket, one live owner per name, stale ones replaced, unlinked when done") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    const std::string path = dir + "/vm1.sock";
    {
        vmm::ControlSocket first(dir, "vm1");
        CHECK(first.path() == path);
        CHECK(S_ISSOCK(mode_of(path)));
        CHECK((mode_of(path) & 0777) == 0600);
        CHECK((mode_of(dir) & 0777) == 0700);
        CHECK_THROWS_WITH_AS(vmm::ControlSocket(dir, "vm1"), doctest::Contains("already running"), vmm::SetupError);
        CHECK(exists(path));  // the refused claim did not touch it
        CHECK_THROWS_WITH_AS(vmm::ControlSocket(dir, "bad/name"), doctest::Contains("--name"), vmm::SetupError);
    }
    CHECK_FALSE(exists(path));

    make_stale_socket(path);
    REQUIRE(exists(path));
    CHECK(vmm::probe_control_socket(path) == vmm::SocketLiveness::Stale);
    {
        vmm::ControlSocket replaced(dir, "vm1");
        CHECK(vmm::probe_control_socket(path) == vmm::SocketLiveness::Live);
    }
    CHECK_FALSE(exists(path));

    // A regular file in the way is not ours to delete.
    {
        FILE* f = std::fopen(path.c_str(), "w");
        REQUIRE(f);
        std::fclose(f);
    }
    CHECK_THROWS_WITH_AS(vmm::ControlSocket(dir, "vm1"), doctest::Contains("not a socket"), vmm::SetupError);
    ::unlink(path.c_str());

    // If the file was replaced meanwhile, the destructor leaves the new one alone.
    {
        vmm::ControlSocket mine(dir, "vm1");
        ::unlink(path.c_str());
        make_stale_socket(path);
    }
    CHECK(exists(path));
}

TEST_CASE("ControlServer + client: stat, dump, errors, stop, over a real socket") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    Served vm(dir, "vm1");

    auto stat = vmm::control_exchange(dir, "vm1", {"stat", {}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlResponse>(stat));
    CHECK(std::get<vmm::ControlResponse>(stat).body ==
          "vm fake pid=1\n.dotted line\ncontrol clients=1 refused_peers=0 accept_failures=0\n");

    auto fault = vmm::control_exchange(dir, "vm1", {"fault", {"1"}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlResponse>(fault));
    CHECK_FALSE(std::get<vmm::ControlResponse>(fault).ok);
    CHECK(std::get<vmm::ControlResponse>(fault).detail == "no vIOMMU");

    auto missing = vmm::control_exchange(dir, "nobody", {"stat", {}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlFailure>(missing));
    CHECK(std::get<vmm::ControlFailure>(missing).kind == vmm::ControlFailure::Kind::NoVm);
    CHECK(std::get<vmm::ControlFailure>(missing).message == "no VM named 'nobody'; `lkvm list` shows the running ones");

    // Hostile bytes: each gets one error response, the server goes on.
    const std::string path = vm.socket.path();
    CHECK(raw_exchange(path, "bogus\n").starts_with("error unknown command 'bogus'"));
    CHECK(raw_exchange(path, std::string("st\0at\n", 6)).starts_with("error request contains control"));
    CHECK(raw_exchange(path, std::string(5000, 'A')).starts_with("error request longer than 1024 bytes"));
    CHECK(raw_exchange(path, "\n").starts_with("error empty request"));
    CHECK(raw_exchange(path, "stat").starts_with("ok\n"));  // EOF ends a line without its newline
    CHECK(raw_exchange(path, "").empty());                  // a liveness probe
    CHECK(raw_exchange(path, "stat\nstat\n") ==
          "ok\nvm fake pid=1\n..dotted line\ncontrol clients=1 refused_peers=0 accept_failures=0\n.\n");  // one per
                                                                                                          // connection

    CHECK(vm.vm.stops == 0);
    auto stop = vmm::control_exchange(dir, "vm1", {"stop", {}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlResponse>(stop));
    CHECK(std::get<vmm::ControlResponse>(stop).detail == "stopping vm1");
    // The loop thread calls stop() after the answer went out: wait for it (the bound only keeps
    // a broken build from hanging).
    for (int i = 0; i < 60'000 && vm.vm.stops == 0; ++i) std::this_thread::sleep_for(1ms);
    CHECK(vm.vm.stops == 1);
}

TEST_CASE("ControlServer: peers of another uid are closed unanswered") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    vmm::ControlServerOptions options;
    options.allowed_uid = ::geteuid() + 1;  // we play the stranger
    Served vm(dir, "vm1", options);
    auto result = vmm::control_exchange(dir, "vm1", {"stat", {}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlFailure>(result));
    CHECK(std::get<vmm::ControlFailure>(result).kind == vmm::ControlFailure::Kind::Protocol);
    CHECK(raw_exchange(vm.socket.path(), "stop\n").empty());
    CHECK(vm.vm.stops == 0);
    vm.loop.stop();
    vm.thread.join();
    CHECK(vm.server.refused_peers() == 2);
    vm.thread = std::thread([] {});  // for the destructor's join
}

TEST_CASE("ControlServer: idle connections beyond the limit close the oldest, so requests still get through") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    vmm::ControlServerOptions options;
    options.max_clients = 3;
    Served vm(dir, "vm1", options);
    std::vector<vmm::UniqueFd> idle;
    for (int i = 0; i < 10; ++i) {
        auto connected = vmm::connect_control_socket(vm.socket.path(), "vm1", std::chrono::steady_clock::now() + 1s);
        REQUIRE(std::holds_alternative<vmm::UniqueFd>(connected));
        idle.push_back(std::move(std::get<vmm::UniqueFd>(connected)));
    }
    auto stat = vmm::control_exchange(dir, "vm1", {"stat", {}}, 2s);
    REQUIRE(std::holds_alternative<vmm::ControlResponse>(stat));
    CHECK(std::get<vmm::ControlResponse>(stat).ok);
    // `lkvm stat` shows the server's own line: the limit held while the request was served.
    CHECK(std::get<vmm::ControlResponse>(stat).body.find("control clients=3 refused_peers=0 accept_failures=0\n") !=
          std::string::npos);
    // The first idle connection was closed by the server: it reads EOF.
    char byte;
    timeval timeout{1, 0};
    ::setsockopt(idle.front().get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    CHECK(::recv(idle.front().get(), &byte, 1, 0) == 0);
    vm.loop.stop();
    vm.thread.join();
    CHECK(vm.server.client_count() <= 3);
    vm.thread = std::thread([] {});
}

TEST_CASE("lkvm list/stat/stop/debug against a directory: rows, stale sockets removed, one-line errors") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    vmm::ControlTimeouts fast;
    fast.stop_wait_ms = 200;

    vmm::ControlOutput empty = vmm::run_control_command({vmm::ControlCommand::Kind::List, "", {}}, dir, fast);
    CHECK(empty.code == 0);
    CHECK(empty.out.starts_with("NAME"));
    CHECK(std::count(empty.out.begin(), empty.out.end(), '\n') == 1);

    Served vm(dir, "alive", {});
    make_stale_socket(dir + "/dead.sock");
    vmm::ControlOutput list = vmm::run_control_command({vmm::ControlCommand::Kind::List, "", {}}, dir, fast);
    CHECK(list.code == 0);
    CHECK(list.out.find("alive") != std::string::npos);
    CHECK(list.out.find(std::to_string(::getpid())) != std::string::npos);
    CHECK(list.out.find("running") != std::string::npos);
    CHECK(list.out.find("dead") == std::string::npos);
    CHECK_FALSE(exists(dir + "/dead.sock"));

    make_stale_socket(dir + "/dead.sock");
    vmm::ControlOutput stale = vmm::run_control_command({vmm::ControlCommand::Kind::Stat, "dead", {}}, dir, fast);
    CHECK(stale.code == 1);
    CHECK(stale.err.find("not running (stale socket") != std::string::npos);

    vmm::ControlOutput stat = vmm::run_control_command({vmm::ControlCommand::Kind::Stat, "alive", {}}, dir, fast);
    CHECK(stat.code == 0);
    CHECK(stat.out == "vm fake pid=1\n.dotted line\ncontrol clients=1 refused_peers=0 accept_failures=0\n");

    vmm::ControlOutput nobody = vmm::run_control_command({vmm::ControlCommand::Kind::Stat, "ghost", {}}, dir, fast);
    CHECK(nobody.code == 1);
    CHECK(nobody.err == "lkvm: error: no VM named 'ghost'; `lkvm list` shows the running ones\n");
    CHECK(vmm::run_control_command({vmm::ControlCommand::Kind::Stat, "../x", {}}, dir, fast).code == 2);

    using K = vmm::ControlCommand::Kind;
    CHECK(vmm::run_control_command({K::Debug, "alive", {"dump"}}, dir, fast).out == "iommu: nothing\n");
    vmm::ControlOutput armed = vmm::run_control_command({K::Debug, "alive", {"fail-next", "blk0"}}, dir, fast);
    CHECK(armed.out == "armed\n");
    vmm::ControlOutput refused = vmm::run_control_command({K::Debug, "alive", {"fault", "1"}}, dir, fast);
    CHECK(refused.code == 1);
    CHECK(refused.err == "lkvm: error: alive: no vIOMMU\n");
    vmm::ControlOutput usage = vmm::run_control_command({K::Debug, "alive", {"stop"}}, dir, fast);
    CHECK(usage.code == 2);
    CHECK(usage.err.find("unknown debug command 'stop'") != std::string::npos);
    CHECK(vmm::run_control_command({K::Debug, "alive", {"fault"}}, dir, fast).code == 2);
    CHECK(vmm::run_control_command({K::Debug, "alive", {}}, dir, fast).code == 2);

    vmm::ControlOutput stop = vmm::run_control_command({K::Stop, "alive", {}}, dir, fast);
    CHECK(stop.code == 0);
    CHECK(stop.out.starts_with("alive: stop"));  // the fake VM does not exit: "still shutting down"
    CHECK(vm.vm.stops == 1);
    for (const std::string& e : {list.err, stat.err, stop.err}) CHECK(e.empty());
}

TEST_CASE("lkvm stop --all stops every live VM and passes over stale sockets") {
    TempDir tmp;
    const std::string dir = tmp.sub("lkvm");
    vmm::ControlTimeouts fast;
    fast.stop_wait_ms = 200;
    using K = vmm::ControlCommand::Kind;
    vmm::ControlOutput none = vmm::run_control_command({K::Stop, "", {}, true}, dir, fast);
    CHECK(none.code == 0);
    CHECK(none.out.empty());

    Served one(dir, "one", {});
    Served two(dir, "two", {});
    make_stale_socket(dir + "/dead.sock");
    vmm::ControlOutput all = vmm::run_control_command({K::Stop, "", {}, true}, dir, fast);
    CHECK(all.code == 0);
    CHECK(all.out.find("one: stop") != std::string::npos);
    CHECK(all.out.find("two: stop") != std::string::npos);
    CHECK(all.out.find("dead") == std::string::npos);
    CHECK(all.err.empty());
    CHECK(one.vm.stops == 1);
    CHECK(two.vm.stops == 1);
}

TEST_CASE("ControlServer at the descriptor limit: a failing accept pauses the listener instead of spinning the loop") {
    TempDir dir;
    vmm::EventLoop loop;
    FakeVm vm;
    vmm::ControlSocket socket(dir.sub("lkvm"), "full");
    vmm::ControlServerOptions options;
    options.accept_backoff = std::chrono::hours(1);  // longer than the test: no clock in the result
    vmm::ControlServer server(loop, socket, vm, options);
    // A loop round counter: an always-readable eventfd that stops the loop after 50 rounds.
    vmm::UniqueFd ticker(::eventfd(1, EFD_NONBLOCK));
    int ticks = 0;
    loop.add(ticker.get(), "ticker", [&] {
        if (++ticks == 50) loop.stop();
    });
    // A client waits in the backlog, so the listening socket stays readable.
    vmm::UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.path().c_str(), sizeof address.sun_path - 1);
    REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);

    // No descriptor left: the soft limit at the lowest free number, so accept() fails with EMFILE.
    support::DescriptorLimitReached full;
    loop.run();
    full.release();

    CHECK(ticks == 50);
    CHECK(server.accept_failures() == 1);  // before: one failed accept per round, for ever
    CHECK(loop.paused(socket.fd()));
    CHECK(server.client_count() == 0);
}
