// vmm/sandbox/modules.hpp: which modules the sandbox's init loads, and in which order.
#include "vmm/sandbox/modules.hpp"

#include <doctest/doctest.h>

#include <algorithm>

namespace {

// The shape of Debian's 6.12 arm64 modules.dep for the modules the sandbox needs (and a few more).
constexpr const char* kModulesDep =
    "kernel/fs/netfs/netfs.ko.xz:\n"
    "kernel/net/9p/9pnet.ko.xz:\n"
    "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"
    "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
    "kernel/drivers/virtio/virtio_mmio.ko.xz:\n"
    "kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/char/hw_random/rng-core.ko.xz\n"
    "kernel/drivers/char/hw_random/rng-core.ko.xz:\n"
    "\n"
    "garbage line without a colon\n"
    "two words.ko: x.ko\n";

std::size_t position(const std::vector<std::string>& order, const std::string& path) {
    return static_cast<std::size_t>(std::find(order.begin(), order.end(), path) - order.begin());
}

}  // namespace

TEST_CASE("module_name: base name without .ko and compression, '-' as '_'") {
    CHECK(vmm::sandbox::module_name("kernel/fs/9p/9p.ko.xz") == "9p");
    CHECK(vmm::sandbox::module_name("kernel/drivers/char/hw_random/virtio-rng.ko") == "virtio_rng");
    CHECK(vmm::sandbox::module_name("a.ko.zst") == "a");
    CHECK(vmm::sandbox::module_name("a.ko.gz") == "a");
    CHECK(vmm::sandbox::module_name("kernel/x.o").empty());
    CHECK(vmm::sandbox::module_name(".ko").empty());
    CHECK(vmm::sandbox::module_compressed("a.ko.xz"));
    CHECK(vmm::sandbox::module_compressed("a.ko.zst"));
    CHECK(!vmm::sandbox::module_compressed("a.ko"));
}

TEST_CASE("modules.dep: each module's file and direct dependencies; malformed lines skipped") {
    auto index = vmm::sandbox::parse_modules_dep(kModulesDep);
    CHECK(index.size() == 7);
    REQUIRE(index.count("9p"));
    CHECK(index.at("9p").path == "kernel/fs/9p/9p.ko.xz");
    CHECK(index.at("9p").deps == std::vector<std::string>{"9pnet", "netfs"});
    CHECK(index.count("virtio_rng"));
}

TEST_CASE("load_order: dependencies before their users, each file once, unknown modules skipped") {
    auto index = vmm::sandbox::parse_modules_dep(kModulesDep);
    auto order = vmm::sandbox::load_order(index, {"virtio_mmio", "9pnet_virtio", "9p", "builtin_thing", "virtio-rng"});
    CHECK(order.size() == 7);
    CHECK(order.front() == "kernel/drivers/virtio/virtio_mmio.ko.xz");
    CHECK(position(order, "kernel/net/9p/9pnet.ko.xz") < position(order, "kernel/net/9p/9pnet_virtio.ko.xz"));
    CHECK(position(order, "kernel/net/9p/9pnet.ko.xz") < position(order, "kernel/fs/9p/9p.ko.xz"));
    CHECK(position(order, "kernel/fs/netfs/netfs.ko.xz") < position(order, "kernel/fs/9p/9p.ko.xz"));
    CHECK(position(order, "kernel/drivers/char/hw_random/rng-core.ko.xz") <
          position(order, "kernel/drivers/char/hw_random/virtio-rng.ko.xz"));
    for (const auto& path : order) CHECK(std::count(order.begin(), order.end(), path) == 1);
    CHECK(vmm::sandbox::load_order(index, {"nothing"}).empty());
}

TEST_CASE("load_order: a cycle or a long chain in a malformed file ends") {
    auto cycle = vmm::sandbox::parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n");
    auto order = vmm::sandbox::load_order(cycle, {"a"});
    CHECK(order == std::vector<std::string>{"b.ko", "a.ko"});
    std::string chain;
    for (int i = 0; i < 1000; ++i) chain += "m" + std::to_string(i) + ".ko: m" + std::to_string(i + 1) + ".ko\n";
    CHECK(vmm::sandbox::load_order(vmm::sandbox::parse_modules_dep(chain), {"m0"}).size() < 100);
}
