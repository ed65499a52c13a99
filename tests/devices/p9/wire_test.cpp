// The 9P decoder: every read bounds-checked, failure sticky; the encoder bounded by its limit.
#include "devices/p9/wire.hpp"

#include <doctest/doctest.h>

using devices::p9::Decoder;
using devices::p9::Encoder;
using devices::p9::Type;

TEST_CASE("p9 Decoder reads little-endian fields and strings, and fails for good past the end") {
    const std::vector<std::uint8_t> bytes = {0x01, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 3, 0, 'a', 'b', 'c', 0xff};
    Decoder d(bytes);
    CHECK(d.u8() == 1);
    CHECK(d.u16() == 0x1234);
    CHECK(d.u32() == 0x12345678);
    CHECK(d.str() == "abc");
    CHECK(d.ok());
    CHECK(d.remaining() == 1);
    CHECK(d.u16() == 0);  // one byte left
    CHECK(!d.ok());
    CHECK(d.u8() == 0);  // sticky
    CHECK(d.remaining() == 0);
}

TEST_CASE("p9 Decoder refuses a string length or byte count beyond the message") {
    const std::vector<std::uint8_t> long_string = {0xff, 0xff, 'a'};
    Decoder d(long_string);
    CHECK(d.str().empty());
    CHECK(!d.ok());
    const std::vector<std::uint8_t> small = {1, 2, 3};
    Decoder b(small);
    CHECK(b.bytes(~std::uint64_t{0}).empty());
    CHECK(!b.ok());
    Decoder e(small);
    CHECK(e.bytes(3).size() == 3);
    CHECK(e.ok());
}

TEST_CASE("p9 parse_header requires the size field to match the message") {
    std::vector<std::uint8_t> m = {7, 0, 0, 0, 100, 0x22, 0x11};
    auto h = devices::p9::parse_header(m);
    REQUIRE(h);
    CHECK(h->type == 100);
    CHECK(h->tag == 0x1122);
    m[0] = 8;
    CHECK(!devices::p9::parse_header(m));
    CHECK(!devices::p9::parse_header(std::vector<std::uint8_t>{7, 0, 0}));
}

TEST_CASE("p9 Encoder stops at its limit and patches the size") {
    std::vector<std::uint8_t> out;
    Encoder e(out, 12, Type::Rread, 5);
    e.u32(1);
    CHECK(e.ok());
    CHECK(e.room() == 1);
    e.u16(2);
    CHECK(!e.ok());
    CHECK(!e.finish());
    std::vector<std::uint8_t> ok;
    Encoder f(ok, 64, Type::Rversion, 5);
    f.str("9P2000.L");
    REQUIRE(f.finish());
    CHECK(ok.size() == 17);
    CHECK(ok[0] == 17);
    CHECK(Encoder(ok, 6, Type::Rversion, 1).ok() == false);
    const auto err = devices::p9::encode_error(9, 22);
    CHECK(err == std::vector<std::uint8_t>{11, 0, 0, 0, 7, 9, 0, 22, 0, 0, 0});
}
