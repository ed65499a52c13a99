// vmm/sandbox/remove_tree.hpp: a guest-shaped tree goes, at any depth, with few descriptors.
#include "vmm/sandbox/remove_tree.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.hpp"
#include "vmm/base/unique_fd.hpp"

namespace {

namespace fs = std::filesystem;

using Scratch = testsupport::TempDir;

// The soft RLIMIT_NOFILE lowered to `limit` for the test's duration.
struct FewDescriptors {
    rlimit saved{};
    explicit FewDescriptors(rlim_t limit) {
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
        rlimit low = saved;
        low.rlim_cur = limit;
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    }
    ~FewDescriptors() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

// A chain of `depth` directories named "d" below `top`, each with a file, made one level at a
// time (the path from `top` is longer than PATH_MAX allows at this depth with longer names).
void make_deep_tree(const std::string& top, int depth) {
    vmm::UniqueFd dir(::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(dir);
    for (int i = 0; i < depth; ++i) {
        vmm::UniqueFd file(::openat(dir.get(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        REQUIRE(file);
        REQUIRE(::mkdirat(dir.get(), "d", 0700) == 0);
        vmm::UniqueFd next(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        REQUIRE(next);
        dir = std::move(next);
    }
}

}  // namespace

TEST_CASE("remove_tree: a 1,100-deep tree goes with 64 descriptors allowed") {
    Scratch s;
    const std::string top = s.path + "/private";
    REQUIRE(::mkdir(top.c_str(), 0700) == 0);
    make_deep_tree(top, 1100);
    {
        FewDescriptors few(64);  // std::filesystem::remove_all holds one per level and fails here
        CHECK(vmm::sandbox::remove_tree(top) == "");
    }
    CHECK(!fs::exists(top));
}

TEST_CASE("remove_tree: symlinks are removed, never followed; read-only directories are emptied") {
    Scratch s;
    const std::string top = s.path + "/private";
    const std::string outside = s.path + "/outside";
    fs::create_directories(top + "/a/b");
    fs::create_directories(outside);
    std::ofstream(outside + "/keep") << "x";
    std::ofstream(top + "/a/b/file") << "y";
    fs::create_directory_symlink(outside, top + "/a/to-outside");
    fs::create_symlink(outside + "/keep", top + "/a/b/to-keep");
    ::mkfifo((top + "/a/fifo").c_str(), 0600);
    fs::permissions(top + "/a/b",
                    fs::perms::owner_read | fs::perms::owner_exec);  // r-x: unlink refused to others than root
    fs::permissions(top + "/a", fs::perms::none);
    CHECK(vmm::sandbox::remove_tree(top) == "");
    CHECK(!fs::exists(top));
    CHECK(fs::exists(outside + "/keep"));
}

TEST_CASE("remove_tree: a missing path is nothing to do, a file is removed, a failure names the path") {
    Scratch s;
    CHECK(vmm::sandbox::remove_tree(s.path + "/missing") == "");
    std::ofstream(s.path + "/file") << "z";
    CHECK(vmm::sandbox::remove_tree(s.path + "/file") == "");
    CHECK(!fs::exists(s.path + "/file"));
    // procfs refuses every removal: the message says where and why, and nothing hangs.
    const std::string error = vmm::sandbox::remove_tree("/proc/self/fdinfo");
    CHECK(error.find("cannot remove '/proc/self/fdinfo'") == 0);
}
