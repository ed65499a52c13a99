// ChainReader / ChainWriter over DmaMemory (virtio 1.2 2.7.4): direction, bounds and reachability.
#include "virtio/chain_io.hpp"

#include <doctest/doctest.h>

#include <array>
#include <numeric>
#include <vector>

#include "tests/support/fake_driver.hpp"
#include "virtio/ring.hpp"

using support::FakeGuestRam;
using virtio::ChainReader;
using virtio::ChainWriter;
using virtio::DescriptorChain;

namespace {

struct Fixture {
    FakeGuestRam ram;
    vmm::DmaMemory dma{ram.memory()};
    std::uint64_t table = ram.alloc(16 * 8, 16);
    std::uint64_t data = ram.alloc(0x1000, 16);

    // Builds a direct chain from (addr, len, writable) triples.
    DescriptorChain chain(std::initializer_list<std::tuple<std::uint64_t, std::uint32_t, bool>> parts) {
        std::uint16_t i = 0;
        for (auto [addr, len, writable] : parts) {
            vring_desc d{};
            d.addr = addr;
            d.len = len;
            d.flags = static_cast<std::uint16_t>((writable ? VRING_DESC_F_WRITE : 0) |
                                                 (i + 1u < parts.size() ? VRING_DESC_F_NEXT : 0));
            d.next = static_cast<std::uint16_t>(i + 1);
            ram.write_obj(table + 16ULL * i, d);
            ++i;
        }
        return DescriptorChain::walk(dma, vmm::Iova{table}, 8, 0, false);
    }
};

}  // namespace

TEST_CASE("ChainReader streams the readable part across descriptor boundaries") {
    Fixture f;
    std::vector<std::uint8_t> pattern(12);
    std::iota(pattern.begin(), pattern.end(), 1);
    f.ram.write(f.data, pattern);
    auto chain = f.chain({{f.data, 5, false}, {f.data + 5, 0, false}, {f.data + 5, 7, false}, {f.data + 100, 4, true}});
    REQUIRE(chain.is_valid());
    ChainReader reader(chain, f.dma);
    CHECK(reader.remaining() == 12);
    auto head = reader.read_obj<std::uint32_t>();
    REQUIRE(head);
    CHECK(*head == 0x04030201);
    std::array<std::uint8_t, 8> rest{};
    CHECK(reader.read(rest));
    CHECK(rest[0] == 5);
    CHECK(rest[7] == 12);
    CHECK(reader.remaining() == 0);
    std::array<std::uint8_t, 1> more{};
    CHECK_FALSE(reader.read(more));  // the writable part is not readable through the reader
    CHECK(reader.failed());
}

TEST_CASE("ChainWriter fills only the writable part and counts bytes written") {
    Fixture f;
    auto chain = f.chain({{f.data, 4, false}, {f.data + 16, 3, true}, {f.data + 32, 5, true}});
    ChainWriter writer(chain, f.dma);
    CHECK(writer.remaining() == 8);
    const std::array<std::uint8_t, 6> bytes{9, 8, 7, 6, 5, 4};
    CHECK(writer.write(bytes));
    CHECK(writer.bytes_written() == 6);
    CHECK(writer.remaining() == 2);
    CHECK(f.ram.read_bytes(f.data + 16, 3) == std::vector<std::uint8_t>{9, 8, 7});
    CHECK(f.ram.read_bytes(f.data + 32, 3) == std::vector<std::uint8_t>{6, 5, 4});
    CHECK(f.ram.read_bytes(f.data, 4) == std::vector<std::uint8_t>{0, 0, 0, 0});  // readable part untouched
    CHECK_FALSE(writer.write(bytes));  // only 2 bytes left: refused as a whole
    CHECK(writer.bytes_written() == 6);
}

TEST_CASE("ChainReader and ChainWriter fail cleanly on buffers outside guest RAM") {
    Fixture f;
    auto chain = f.chain({{f.ram.end() - 2, 4, false}, {0x1000, 4, true}});
    REQUIRE(chain.is_valid());  // addresses are checked when used, not when walked
    ChainReader reader(chain, f.dma);
    std::array<std::uint8_t, 4> bytes{};
    CHECK_FALSE(reader.read(bytes));
    CHECK(reader.failed());
    CHECK(reader.remaining() == 0);
    ChainWriter writer(chain, f.dma);
    CHECK_FALSE(writer.write(bytes));
    CHECK(writer.bytes_written() == 0);
}

TEST_CASE("ChainWriter zero-copy visit hands out host pointers for guest buffers") {
    Fixture f;
    auto chain = f.chain({{f.data, 3, true}, {f.data + 64, 3, true}});
    ChainWriter writer(chain, f.dma);
    struct Fill final : vmm::HostVisitor {
        unsigned pieces = 0;
        bool visit(std::uint8_t* host, std::uint64_t length) override {
            ++pieces;
            for (std::uint64_t i = 0; i < length; ++i) host[i] = 0xee;
            return true;
        }
    } fill;
    CHECK(writer.visit(5, fill));
    CHECK(fill.pieces == 2);
    CHECK(writer.bytes_written() == 5);
    CHECK(f.ram.read_bytes(f.data + 64, 3) == std::vector<std::uint8_t>{0xee, 0xee, 0});
}

TEST_CASE("ChainReader skip moves past a header") {
    Fixture f;
    f.ram.write(f.data, std::vector<std::uint8_t>{1, 2, 3, 4});
    auto chain = f.chain({{f.data, 4, false}});
    ChainReader reader(chain, f.dma);
    CHECK(reader.skip(3));
    CHECK(reader.read_obj<std::uint8_t>() == std::uint8_t{4});
    CHECK_FALSE(reader.skip(1));
}
