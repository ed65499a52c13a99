#include "vmm/base/descriptor_limit.hpp"

#include <doctest/doctest.h>
#include <sys/resource.h>

#include <algorithm>

// A guest that makes lkvm hold descriptors must meet its bound (EMFILE in its protocol) long
// before lkvm's own socket(), eventfd() and accept() calls meet the process limit: lkvm starts by
// raising the soft limit (often 1024) to the hard one.
TEST_CASE("raise_descriptor_limit lifts the soft RLIMIT_NOFILE to the hard limit") {
    rlimit original{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
    rlimit lowered = original;
    lowered.rlim_cur = std::min<rlim_t>(original.rlim_max, 256);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
    CHECK(vmm::descriptor_limit() == lowered.rlim_cur);

    CHECK(vmm::raise_descriptor_limit() == original.rlim_max);
    rlimit now{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
    CHECK(now.rlim_cur == original.rlim_max);
    CHECK(vmm::descriptor_limit() == original.rlim_max);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &original) == 0);
}

TEST_CASE("descriptors_for_guests keeps lkvm's reserve") {
    CHECK(vmm::descriptors_for_guests(1024) == 1024 - vmm::kReservedDescriptors);
    CHECK(vmm::descriptors_for_guests(vmm::kReservedDescriptors) == 0);
    CHECK(vmm::descriptors_for_guests(10) == 0);
}
