// virtio-9p end to end through the fake driver: the mount tag in the config, one 9P request per
// chain (readable request, writable reply), replies split over descriptors as Linux's zero-copy
// reads need (net/9p/trans_virtio.c), and broken chains answered without touching the share.
#include "virtio/p9.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_9p.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>

#include "devices/p9/file_server.hpp"
#include "tests/devices/p9/p9_client.hpp"
#include "tests/support/fake_driver.hpp"

using support::ChainLayout;
using support::FakeDriver;
using support::Segment;
using namespace p9test;

namespace {

std::vector<std::uint8_t> message(Type type, const std::function<void(Encoder&)>& body) {
    std::vector<std::uint8_t> m;
    Encoder e(m, 1 << 20, type, 3);
    body(e);
    REQUIRE(e.finish());
    return m;
}

// Puts `request` in one readable buffer, `reply_room` writable bytes (split in `pieces`), kicks;
// returns the reply bytes the device reported as used.
std::vector<std::uint8_t> exchange(FakeDriver& driver, const std::vector<std::uint8_t>& request,
                                   std::uint32_t reply_room, unsigned pieces = 1) {
    const std::uint64_t out = driver.ram().alloc(request.size());
    driver.ram().write(out, request);
    std::vector<Segment> segments{Segment{out, static_cast<std::uint32_t>(request.size()), false}};
    std::vector<std::uint64_t> in;
    for (unsigned i = 0; i < pieces; ++i) {
        const std::uint32_t len = reply_room / pieces + (i + 1 == pieces ? reply_room % pieces : 0);
        in.push_back(driver.ram().alloc(len));
        segments.push_back(Segment{in.back(), len, true});
    }
    driver.add_chain(0, segments, ChainLayout::Indirect);
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    std::vector<std::uint8_t> reply;
    for (std::size_t i = 0; i < in.size() && reply.size() < used->len; ++i) {
        const std::uint32_t len = segments[i + 1].len;
        auto piece = driver.ram().read_bytes(in[i], std::min<std::size_t>(len, used->len - reply.size()));
        reply.insert(reply.end(), piece.begin(), piece.end());
    }
    return reply;
}

}  // namespace

TEST_CASE("virtio-9p: device id, MOUNT_TAG feature and the tag in the config") {
    Scratch s;
    FakeDriver driver(std::make_unique<virtio::P9>(devices::p9::Server::open(s.exported.string(), {}), "hostshare"));
    REQUIRE(driver.start());
    CHECK(driver.read_reg(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_9P);
    CHECK((driver.negotiated() & (1ull << VIRTIO_9P_MOUNT_TAG)) != 0);
    CHECK(driver.read_config(0, 2) == 9);
    std::string tag;
    for (unsigned i = 0; i < 9; ++i) tag.push_back(static_cast<char>(driver.read_config(2 + i, 1)));
    CHECK(tag == "hostshare");
}

TEST_CASE("virtio-9p: version, attach, create and a read whose reply spans descriptors") {
    Scratch s;
    std::ofstream(s.exported / "data") << std::string(5000, 'q');
    FakeDriver driver(std::make_unique<virtio::P9>(devices::p9::Server::open(s.exported.string(), {}), "t"));
    REQUIRE(driver.start(FakeDriver::kAllFeatures, 128));
    auto reply =
        exchange(driver, message(Type::Tversion, [](Encoder& e) { e.u32(512 * 1024), e.str("9P2000.L"); }), 64);
    REQUIRE(reply.size() == 4 + 1 + 2 + 4 + 2 + 8);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rversion));
    reply = exchange(
        driver, message(Type::Tattach, [](Encoder& e) { e.u32(1), e.u32(~0u), e.str(""), e.str(""), e.u32(0); }), 64);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rattach));
    reply = exchange(driver, message(Type::Twalk, [](Encoder& e) { e.u32(1), e.u32(2), e.u16(1), e.str("data"); }), 64);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rwalk));
    reply = exchange(driver, message(Type::Tlopen, [](Encoder& e) { e.u32(2), e.u32(0); }), 64);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rlopen));
    // As a zero-copy read: the 11-byte header first, then the data pages.
    reply = exchange(driver, message(Type::Tread, [](Encoder& e) { e.u32(2), e.u64(0), e.u32(5000); }), 11 + 5000, 3);
    REQUIRE(reply.size() == 11 + 5000);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rread));
    CHECK(std::all_of(reply.begin() + 11, reply.end(), [](std::uint8_t b) { return b == 'q'; }));
    CHECK(driver.irq().count() > 0);
}

TEST_CASE("virtio-9p: a request larger than msize or outside RAM is answered or dropped, never served") {
    Scratch s;
    FakeDriver driver(std::make_unique<virtio::P9>(devices::p9::Server::open(s.exported.string(), {}), "t"));
    REQUIRE(driver.start(FakeDriver::kAllFeatures, 128));
    exchange(driver, message(Type::Tversion, [](Encoder& e) { e.u32(8192), e.str("9P2000.L"); }), 64);
    exchange(driver, message(Type::Tattach, [](Encoder& e) { e.u32(1), e.u32(~0u), e.str(""), e.str(""), e.u32(0); }),
             64);
    // 9000 bytes > msize 8192: Rlerror, and no directory was created.
    auto reply = exchange(driver,
                          message(Type::Tmkdir,
                                  [](Encoder& e) {
                                      e.u32(1), e.str(std::string(8000, 'd')), e.u32(0755), e.u32(0);
                                      e.bytes(std::vector<std::uint8_t>(1000, 0));
                                  }),
                          64);
    REQUIRE(reply.size() == 11);
    CHECK(reply[4] == static_cast<std::uint8_t>(Type::Rlerror));
    CHECK(std::filesystem::is_empty(s.exported));
    // The request buffer lies outside guest RAM.
    driver.add_chain(0, {Segment{driver.ram().end(), 64, false}, Segment{driver.ram().alloc(64), 64, true}});
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 11);  // Rlerror(EPROTO)
    // No writable buffer: nothing can be answered.
    driver.add_chain(0, {Segment{driver.ram().alloc(16), 16, false}});
    driver.kick(0);
    used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 0);
}

TEST_CASE("virtio-9p: a device reset ends the 9P session (fids are gone)") {
    Scratch s;
    auto server = devices::p9::Server::open(s.exported.string(), {});
    const devices::p9::Server& served = *server;
    FakeDriver driver(std::make_unique<virtio::P9>(std::move(server), "t"));
    REQUIRE(driver.start(FakeDriver::kAllFeatures, 128));
    exchange(driver, message(Type::Tversion, [](Encoder& e) { e.u32(8192), e.str("9P2000.L"); }), 64);
    exchange(driver, message(Type::Tattach, [](Encoder& e) { e.u32(1), e.u32(~0u), e.str(""), e.str(""), e.u32(0); }),
             64);
    CHECK(served.fid_count() == 1);
    driver.reset();
    CHECK(served.fid_count() == 0);
}
