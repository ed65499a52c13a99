// A fresh private directory under /tmp for one test, removed with everything in it at the end.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace testsupport {

struct TempDir {
    std::string path;
    explicit TempDir(const std::string& prefix = "lkvm-test") {
        std::string pattern = "/tmp/" + prefix + "-XXXXXX";
        REQUIRE(::mkdtemp(pattern.data()));
        path = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

}  // namespace testsupport
