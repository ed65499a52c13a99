// doctest entry point for the unit tests. Test files mirror the source tree.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
