// doctest entry point for the unit tests. Test files mirror the source tree.
// Guest-error logging is silenced unless LKVM_TEST_LOG=1: the tests feed hostile input on purpose,
// and the rate-limited warnings it provokes would bury the test report.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>

#include "vmm/base/log.hpp"

int main(int argc, char** argv) {
    const char* verbose = std::getenv("LKVM_TEST_LOG");
    vmm::set_log_level(verbose && std::strcmp(verbose, "1") == 0 ? vmm::LogLevel::Debug : vmm::LogLevel::Error);
    doctest::Context context(argc, argv);
    return context.run();
}
