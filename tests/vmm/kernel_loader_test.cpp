#include "vmm/kernel_loader.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"

namespace {

using vmm::GuestPhysAddr;
using vmm::GuestRange;
using vmm::ImageHeader;
constexpr std::uint64_t kMiB = 1ull << 20;

std::vector<std::uint8_t> image_header(std::uint64_t text_offset, std::uint64_t image_size, std::uint64_t flags = 2) {
    std::vector<std::uint8_t> h(64, 0);
    std::memcpy(&h[8], &text_offset, 8);
    std::memcpy(&h[16], &image_size, 8);
    std::memcpy(&h[24], &flags, 8);
    std::memcpy(&h[56], "ARM\x64", 4);
    return h;
}

GuestRange ram(std::uint64_t size) { return *vmm::layout::ram(size); }

struct TempFile {
    std::string path;
    explicit TempFile(const std::vector<std::uint8_t>& bytes) {
        char name[] = "/tmp/lkvm-loader-XXXXXX";
        int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
        ::close(fd);
        path = name;
    }
    ~TempFile() { ::unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("ImageHeader accepts a modern arm64 Image header") {
    auto h = ImageHeader::parse(image_header(0, 46 * kMiB), "kernel");
    CHECK(h.text_offset == 0);
    CHECK(h.image_size == 46 * kMiB);
    CHECK(h.flags == 2);
}

TEST_CASE("ImageHeader assumes text_offset 0x80000 when image_size is zero") {
    auto h = ImageHeader::parse(image_header(0x1234000, 0), "kernel");
    CHECK(h.text_offset == 0x80000);
    CHECK(h.image_size == 0);
}

TEST_CASE("ImageHeader rejects a file without the ARM\\x64 magic") {
    auto bytes = image_header(0, kMiB);
    bytes[56] = 'X';
    CHECK_THROWS_WITH_AS(ImageHeader::parse(bytes, "kernel 'vmlinux'"),
                         doctest::Contains("kernel 'vmlinux' is not an arm64 Linux Image"), vmm::SetupError);
}

TEST_CASE("ImageHeader rejects a file shorter than the header") {
    std::vector<std::uint8_t> bytes(10, 0);
    CHECK_THROWS_WITH_AS(ImageHeader::parse(bytes, "kernel"), doctest::Contains("shorter than the 64-byte"),
                         vmm::SetupError);
}

TEST_CASE("ImageHeader rejects big-endian kernels and odd text offsets") {
    CHECK_THROWS_WITH_AS(ImageHeader::parse(image_header(0, kMiB, 1), "kernel"), doctest::Contains("big-endian"),
                         vmm::SetupError);
    CHECK_THROWS_WITH_AS(ImageHeader::parse(image_header(0x123, kMiB), "kernel"), doctest::Contains("text_offset"),
                         vmm::SetupError);
}

TEST_CASE("plan_boot puts the kernel at the start of RAM, the DTB in the top 2 MiB block and the initrd below it") {
    auto header = ImageHeader::parse(image_header(0, 46 * kMiB), "kernel");
    auto plan = vmm::plan_boot(ram(256 * kMiB), header, 44 * kMiB, 3 * kMiB);
    CHECK(plan.kernel.base().value == vmm::layout::kRamBase);
    CHECK(plan.kernel.size() == 46 * kMiB);
    CHECK(plan.dtb.base().value == vmm::layout::kRamBase + 254 * kMiB);
    CHECK(plan.dtb.size() == 2 * kMiB);
    REQUIRE(plan.initrd);
    CHECK(plan.initrd->size() == 3 * kMiB);
    CHECK(plan.initrd->end() <= plan.dtb.base().value);
    CHECK(plan.initrd->base().value % 0x10000 == 0);
    CHECK(plan.initrd->base().value >= plan.kernel.end());
}

TEST_CASE("plan_boot honours text_offset and reserves the larger of file size and image_size") {
    auto old_kernel = ImageHeader::parse(image_header(0, 0), "kernel");
    auto plan = vmm::plan_boot(ram(128 * kMiB), old_kernel, 10 * kMiB, std::nullopt);
    CHECK(plan.kernel.base().value == vmm::layout::kRamBase + 0x80000);
    CHECK(plan.kernel.size() == 10 * kMiB);
    CHECK_FALSE(plan.initrd);
}

TEST_CASE("plan_boot keeps the DTB block 2 MiB aligned when RAM ends off a 2 MiB boundary") {
    auto header = ImageHeader::parse(image_header(0, 8 * kMiB), "kernel");
    auto plan = vmm::plan_boot(ram(255 * kMiB), header, 8 * kMiB, std::nullopt);
    CHECK(plan.dtb.base().value % (2 * kMiB) == 0);
    CHECK(plan.dtb.end() <= vmm::layout::kRamBase + 255 * kMiB);
}

TEST_CASE("plan_boot says how much memory is needed when the kernel and initrd do not fit") {
    auto header = ImageHeader::parse(image_header(0, 46 * kMiB), "kernel");
    CHECK_THROWS_WITH_AS(vmm::plan_boot(ram(32 * kMiB), header, 44 * kMiB, std::nullopt),
                         doctest::Contains("use at least -m"), vmm::SetupError);
    CHECK_THROWS_WITH_AS(vmm::plan_boot(ram(50 * kMiB), header, 44 * kMiB, 8 * kMiB),
                         doctest::Contains("initrd does not fit"), vmm::SetupError);
}

TEST_CASE("plan_boot keeps a huge guest's initrd within 32 GiB of the kernel") {
    auto header = ImageHeader::parse(image_header(0, 46 * kMiB), "kernel");
    auto plan = vmm::plan_boot(ram(64ull << 30), header, 44 * kMiB, 3 * kMiB);
    REQUIRE(plan.initrd);
    CHECK(plan.initrd->end() <= vmm::layout::kRamBase - (vmm::layout::kRamBase % (1ull << 30)) + (32ull << 30));
}

TEST_CASE("BootFile loads a file straight into guest memory and reads its Image header") {
    auto bytes = image_header(0, 2 * kMiB);
    bytes.resize(8192, 0x5a);
    TempFile file(bytes);
    auto boot_file = vmm::BootFile::open(file.path, "kernel");
    CHECK(boot_file.size() == 8192);
    CHECK(boot_file.image_header().image_size == 2 * kMiB);

    std::array ranges{*GuestRange::make(GuestPhysAddr{0x8000'0000}, 0x10000)};
    vmm::GuestMemory memory(ranges);
    boot_file.load(memory, GuestPhysAddr{0x8000'1000});
    CHECK(memory.read_obj<std::uint8_t>(GuestPhysAddr{0x8000'1000 + 100}) == 0x5a);
    CHECK(memory.read_obj<std::uint32_t>(GuestPhysAddr{0x8000'1000 + 56}) == 0x644d5241u);
    CHECK_THROWS_AS(boot_file.load(memory, GuestPhysAddr{0x8000'f000}), vmm::SetupError);
}

TEST_CASE("BootFile names the file when it cannot be opened") {
    CHECK_THROWS_WITH_AS(vmm::BootFile::open("/nonexistent/Image", "kernel"), doctest::Contains("'/nonexistent/Image'"),
                         vmm::SetupError);
}
