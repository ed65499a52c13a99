// vmm::cli::parse for tests: the words after `lkvm`, and what a usage error or help returns.
#pragma once

#include <doctest/doctest.h>

#include <vector>

#include "vmm/cli.hpp"

namespace test_support {

inline vmm::cli::Command parse_words(std::vector<const char*> args) {
    args.insert(args.begin(), "lkvm");
    return vmm::cli::parse(static_cast<int>(args.size()), args.data());
}

// The Exit the words give (help, version, a usage error); fails the test for any other command.
inline vmm::cli::Exit exit_of(std::vector<const char*> args) {
    auto command = parse_words(std::move(args));
    auto* exit = std::get_if<vmm::cli::Exit>(&command);
    REQUIRE(exit != nullptr);
    return *exit;
}

}  // namespace test_support
