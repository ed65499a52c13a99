#include "devices/pci/config_space.hpp"

#include <doctest/doctest.h>

#include <array>

using devices::pci::ConfigSpace;
using devices::pci::valid_config_access;

TEST_CASE("valid_config_access accepts only aligned 1, 2 and 4-byte accesses inside 4 KiB") {
    CHECK(valid_config_access(0, 4));
    CHECK(valid_config_access(2, 2));
    CHECK(valid_config_access(0xfff, 1));
    CHECK(valid_config_access(0xffc, 4));
    CHECK_FALSE(valid_config_access(1, 2));
    CHECK_FALSE(valid_config_access(2, 4));
    CHECK_FALSE(valid_config_access(0, 8));
    CHECK_FALSE(valid_config_access(0, 3));
    CHECK_FALSE(valid_config_access(0x1000, 1));
    CHECK_FALSE(valid_config_access(~std::uint64_t{0} - 3, 4));
}

TEST_CASE("ConfigSpace writes only the writable bits") {
    ConfigSpace c;
    c.set_u32(0x10, 0x0000000c);
    c.set_writable(0x10, 4, 0xffffc000);
    const std::array<std::uint8_t, 4> all_ones{0xff, 0xff, 0xff, 0xff};
    c.write(0x10, all_ones);
    CHECK(c.u32(0x10) == 0xffffc00c);  // sizing: low bits and flags are read-only

    c.set_u16(0x06, 0x8010);
    const std::array<std::uint8_t, 2> status{0x00, 0x00};
    c.write(0x06, status);
    CHECK(c.u16(0x06) == 0x8010);  // no writable bit there: the status stays as the VMM set it

    std::array<std::uint8_t, 2> out{};
    c.read(0x10, out);
    CHECK(out[0] == 0x0c);
    CHECK(out[1] == 0xc0);
}

TEST_CASE("ConfigSpace ignores the parts of a write past its end") {
    ConfigSpace c;
    c.set_writable(0xffe, 2, 0xffff);
    const std::array<std::uint8_t, 4> bytes{1, 2, 3, 4};
    c.write(0xffe, bytes);
    CHECK(c.u16(0xffe) == 0x0201);
}
