// vmm/sandbox/cpio.hpp: the archive reads back as the kernel unpacks it (tests/vmm/sandbox/cpio_reader.hpp).
#include "vmm/sandbox/cpio.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include "tests/vmm/sandbox/cpio_reader.hpp"
#include "vmm/sandbox/session.hpp"

namespace {

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("cpio: directories, files of every length mod 4 and device nodes read back in order") {
    vmm::sandbox::CpioWriter cpio;
    cpio.add_directory("dev", 0755);
    cpio.add_char_device("dev/console", 0600, 5, 1);
    const std::vector<std::string> contents = {"", "a", "ab", "abc", "abcd", "abcde"};
    for (std::size_t i = 0; i < contents.size(); ++i)
        cpio.add_file("f" + std::string(i, 'x'), 0644, bytes_of(contents[i]));
    cpio.add_file("exe", 0104755, bytes_of("#!"));  // only permission bits are kept: no type smuggled
    const std::vector<std::uint8_t> archive = cpio.finish();
    CHECK(archive.size() % 4 == 0);

    std::size_t end = 0;
    auto entries = test_cpio::read(archive, 0, &end);
    REQUIRE(entries);
    CHECK(end == archive.size());
    REQUIRE(entries->size() == 3 + contents.size());
    CHECK((*entries)[0].name == "dev");
    CHECK((*entries)[0].mode == (S_IFDIR | 0755));
    CHECK((*entries)[0].nlink == 2);
    CHECK((*entries)[1].name == "dev/console");
    CHECK((*entries)[1].mode == (S_IFCHR | 0600));
    CHECK((*entries)[1].rdev_major == 5);
    CHECK((*entries)[1].rdev_minor == 1);
    for (std::size_t i = 0; i < contents.size(); ++i) {
        const auto& e = (*entries)[2 + i];
        CHECK(e.name == "f" + std::string(i, 'x'));
        CHECK(e.mode == (S_IFREG | 0644));
        CHECK(std::string(e.data.begin(), e.data.end()) == contents[i]);
    }
    CHECK(entries->back().mode == (S_IFREG | 04755));
}

TEST_CASE("cpio: finish() empties the writer; an empty archive is just the trailer") {
    vmm::sandbox::CpioWriter cpio;
    cpio.add_file("x", 0644, bytes_of("data"));
    CHECK(test_cpio::read(cpio.finish())->size() == 1);
    auto empty = test_cpio::read(cpio.finish());
    REQUIRE(empty);
    CHECK(empty->empty());
}

TEST_CASE("cpio: padding brings any size to a multiple of 4") {
    for (std::size_t n = 0; n < 12; ++n) {
        CAPTURE(n);
        CHECK((n + vmm::sandbox::cpio_padding(n)) % 4 == 0);
        CHECK(vmm::sandbox::cpio_padding(n) < 4);
    }
}

TEST_CASE("init_archive: /lkvm-init holds the binary, executable, with /dev/console beside it") {
    const std::vector<std::uint8_t> init = bytes_of(std::string(1000, '\x7f') + "ELF");
    auto entries = test_cpio::read(vmm::sandbox::init_archive(init));
    REQUIRE(entries);
    bool console = false, lkvm_init = false;
    for (const auto& e : *entries) {
        if (e.name == "dev/console") console = (e.mode == (S_IFCHR | 0600)) && e.rdev_major == 5 && e.rdev_minor == 1;
        if (e.name == "lkvm-init") lkvm_init = (e.mode == (S_IFREG | 0755)) && e.data == init;
    }
    CHECK(console);
    CHECK(lkvm_init);
}
