// vmm/sandbox/guest_init.hpp: lkvm becomes the guest's init only as PID 1 started as /lkvm-init
// (what that init does is proven in the rig: tests/rig/sandbox.test.sh).
#include "vmm/sandbox/guest_init.hpp"

#include <doctest/doctest.h>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

const char* as_init[] = {"/lkvm-init", nullptr};
const char* as_lkvm[] = {"lkvm", "sandbox", nullptr};

}  // namespace

TEST_CASE("is_guest_init: never outside PID 1, whatever argv[0] says") {
    REQUIRE(::getpid() != 1);
    CHECK(!vmm::sandbox::is_guest_init(1, as_init));
    CHECK(!vmm::sandbox::is_guest_init(2, as_lkvm));
    CHECK(!vmm::sandbox::is_guest_init(0, as_lkvm));
}

TEST_CASE("is_guest_init: as PID 1 only under the name /lkvm-init") {
    // A child in a new PID namespace is its PID 1 (needs CAP_SYS_ADMIN: skipped without it).
    const pid_t outer = ::fork();
    REQUIRE(outer >= 0);
    if (outer == 0) {
        if (::unshare(CLONE_NEWPID) != 0) ::_exit(77);
        const pid_t inner = ::fork();
        if (inner < 0) ::_exit(78);
        if (inner == 0) {
            const bool ok =
                ::getpid() == 1 && vmm::sandbox::is_guest_init(1, as_init) && !vmm::sandbox::is_guest_init(2, as_lkvm);
            ::_exit(ok ? 0 : 1);
        }
        int status = 0;
        if (::waitpid(inner, &status, 0) != inner || !WIFEXITED(status)) ::_exit(79);
        ::_exit(WEXITSTATUS(status));
    }
    int status = 0;
    REQUIRE(::waitpid(outer, &status, 0) == outer);
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        MESSAGE("no new PID namespace (not root?): skipped");
        return;
    }
    CHECK(WEXITSTATUS(status) == 0);
}
