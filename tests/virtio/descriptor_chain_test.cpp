// Descriptor rules of virtio 1.2 2.7.5 / 2.7.5.3, walked directly over fake guest RAM.
#include "virtio/descriptor_chain.hpp"

#include <doctest/doctest.h>

#include "tests/support/fake_driver.hpp"
#include "virtio/ring.hpp"

using support::FakeGuestRam;
using virtio::ChainError;
using virtio::DescriptorChain;

namespace {

constexpr std::uint16_t kSize = 8;

struct Table {
    FakeGuestRam ram;
    vmm::DmaMemory dma{ram.memory()};
    std::uint64_t table = ram.alloc(16 * kSize, 16);
    std::uint64_t buffer = ram.alloc(0x1000, 16);

    void set(std::uint64_t base, std::uint16_t index, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
             std::uint16_t next = 0) {
        vring_desc d{};
        d.addr = addr;
        d.len = len;
        d.flags = flags;
        d.next = next;
        ram.write_obj(base + 16ULL * index, d);
    }
    void set(std::uint16_t index, std::uint64_t addr, std::uint32_t len, std::uint16_t flags, std::uint16_t next = 0) {
        set(table, index, addr, len, flags, next);
    }
    DescriptorChain walk(std::uint16_t head, bool indirect = true) {
        return DescriptorChain::walk(dma, vmm::Iova{table}, kSize, head, indirect);
    }
};

}  // namespace

TEST_CASE("DescriptorChain yields readable then writable buffers with their totals") {
    Table t;
    t.set(3, t.buffer, 16, VRING_DESC_F_NEXT, 5);
    t.set(5, t.buffer + 16, 8, VRING_DESC_F_NEXT, 1);
    t.set(1, t.buffer + 64, 100, VRING_DESC_F_WRITE);
    auto chain = t.walk(3);
    REQUIRE(chain.is_valid());
    CHECK(chain.head() == 3);
    REQUIRE(chain.descriptors().size() == 3);
    CHECK(chain.readable().size() == 2);
    CHECK(chain.writable().size() == 1);
    CHECK(chain.readable_bytes() == 24);
    CHECK(chain.writable_bytes() == 100);
    CHECK(chain.descriptors()[1].addr.value == t.buffer + 16);
    CHECK(chain.writable()[0].device_writable);
}

TEST_CASE("G7 DescriptorChain detects a loop in the descriptor table") {
    Table t;
    t.set(0, t.buffer, 4, VRING_DESC_F_NEXT, 1);
    t.set(1, t.buffer, 4, VRING_DESC_F_NEXT, 0);
    auto chain = t.walk(0);
    CHECK(chain.error() == ChainError::TooLong);
    CHECK(chain.descriptors().empty());
}

TEST_CASE("G7 DescriptorChain accepts a chain of exactly queue-size descriptors and rejects a self loop") {
    Table t;
    for (std::uint16_t i = 0; i < kSize; ++i)
        t.set(i, t.buffer, 1, i + 1 < kSize ? VRING_DESC_F_NEXT : 0, static_cast<std::uint16_t>(i + 1));
    CHECK(t.walk(0).is_valid());
    CHECK(t.walk(0).descriptors().size() == kSize);
    t.set(4, t.buffer, 1, VRING_DESC_F_NEXT, 4);
    CHECK(t.walk(0).error() == ChainError::TooLong);
}

TEST_CASE("DescriptorChain rejects out-of-range head and next indices") {
    Table t;
    CHECK(t.walk(kSize).error() == ChainError::HeadOutOfRange);
    t.set(0, t.buffer, 4, VRING_DESC_F_NEXT, kSize);
    CHECK(t.walk(0).error() == ChainError::NextOutOfRange);
}

TEST_CASE("DescriptorChain rejects chains whose total length exceeds 2^32 bytes") {
    Table t;
    t.set(0, t.buffer, 0xffffffff, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    t.set(1, t.buffer, 1, VRING_DESC_F_WRITE);
    auto exactly = t.walk(0);
    CHECK(exactly.is_valid());  // 2^32 exactly is allowed
    CHECK(exactly.writable_bytes() == (std::uint64_t{1} << 32));
    t.set(1, t.buffer, 2, VRING_DESC_F_WRITE);
    CHECK(t.walk(0).error() == ChainError::TooManyBytes);
}

TEST_CASE("DescriptorChain rejects a buffer whose address plus length wraps") {
    Table t;
    t.set(0, ~0ULL - 3, 8, 0);
    CHECK(t.walk(0).error() == ChainError::AddressWraps);
    t.set(0, ~0ULL - 7, 8, 0);  // ends exactly at 2^64 - 1: valid as a chain (unreachable later)
    CHECK(t.walk(0).is_valid());
}

TEST_CASE("DescriptorChain rejects a readable buffer after a writable one") {
    Table t;
    t.set(0, t.buffer, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
    t.set(1, t.buffer, 4, 0);
    CHECK(t.walk(0).error() == ChainError::ReadableAfterWritable);
}

TEST_CASE("DescriptorChain reports a descriptor table outside guest RAM as unreadable") {
    Table t;
    auto chain = DescriptorChain::walk(t.dma, vmm::Iova{t.ram.end()}, kSize, 0, true);
    CHECK(chain.error() == ChainError::Unreadable);
}

TEST_CASE("DescriptorChain follows direct descriptors into one indirect table") {
    Table t;
    const std::uint64_t indirect = t.ram.alloc(16 * 3, 16);
    t.set(2, t.buffer, 10, VRING_DESC_F_NEXT, 6);
    // CONFORMANCE.md G7: the WRITE flag on the pointing descriptor is ignored.
    t.set(6, indirect, 48, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE);
    t.set(indirect, 0, t.buffer + 100, 20, VRING_DESC_F_NEXT, 2);
    t.set(indirect, 2, t.buffer + 200, 30, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    t.set(indirect, 1, t.buffer + 300, 40, VRING_DESC_F_WRITE);
    auto chain = t.walk(2);
    REQUIRE(chain.is_valid());
    CHECK(chain.descriptors().size() == 4);
    CHECK(chain.readable_bytes() == 30);
    CHECK(chain.writable_bytes() == 70);
    CHECK(chain.descriptors()[3].addr.value == t.buffer + 300);
}

TEST_CASE("DescriptorChain enforces the indirect descriptor rules") {
    Table t;
    const std::uint64_t indirect = t.ram.alloc(16 * 4, 16);
    t.set(indirect, 0, t.buffer, 4, 0);

    SUBCASE("INDIRECT without the negotiated feature") {
        t.set(0, indirect, 16, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0, false).error() == ChainError::IndirectNotNegotiated);
        CHECK(t.walk(0, true).is_valid());
    }
    SUBCASE("INDIRECT together with NEXT") {
        t.set(0, indirect, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
        CHECK(t.walk(0).error() == ChainError::IndirectWithNext);
    }
    SUBCASE("zero-length indirect table") {
        t.set(0, indirect, 0, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::BadIndirectLength);
    }
    SUBCASE("indirect table length not a multiple of 16") {
        t.set(0, indirect, 24, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::BadIndirectLength);
    }
    SUBCASE("indirect table larger than 32768 entries") {
        t.set(0, indirect, 16 * 32769, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::BadIndirectLength);
    }
    SUBCASE("nested indirect") {
        t.set(indirect, 0, t.buffer, 4, VRING_DESC_F_NEXT, 1);
        t.set(indirect, 1, indirect, 16, VRING_DESC_F_INDIRECT);
        t.set(0, indirect, 32, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::NestedIndirect);
    }
    SUBCASE("loop inside the indirect table") {
        t.set(indirect, 0, t.buffer, 4, VRING_DESC_F_NEXT, 1);
        t.set(indirect, 1, t.buffer, 4, VRING_DESC_F_NEXT, 0);
        t.set(0, indirect, 32, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::TooLong);
    }
    SUBCASE("next beyond the indirect table") {
        t.set(indirect, 0, t.buffer, 4, VRING_DESC_F_NEXT, 2);
        t.set(0, indirect, 32, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::NextOutOfRange);
    }
    SUBCASE("indirect table outside guest RAM") {
        t.set(0, t.ram.end(), 16, VRING_DESC_F_INDIRECT);
        CHECK(t.walk(0).error() == ChainError::Unreadable);
    }
}

TEST_CASE("DescriptorChain copies descriptors once, so later guest writes do not change it") {
    Table t;
    t.set(0, t.buffer, 16, 0);
    auto chain = t.walk(0);
    t.set(0, t.buffer + 8, 4096, VRING_DESC_F_WRITE);
    REQUIRE(chain.is_valid());
    CHECK(chain.readable_bytes() == 16);
    CHECK(chain.descriptors()[0].addr.value == t.buffer);
}

TEST_CASE("DescriptorChain keeps short chains inline and long ones intact past the inline capacity") {
    // Chains of n descriptors in one indirect table (n readable then one writable), around the
    // inline capacity (16) and well past it; each survives a copy and a move (the spans must
    // follow the storage, not point into the original).
    for (std::uint16_t n : {1, 2, 15, 16, 17, 40, 300}) {
        CAPTURE(n);
        Table t;
        const std::uint16_t entries = static_cast<std::uint16_t>(n + 1);
        const std::uint64_t indirect = t.ram.alloc(16ULL * entries, 16);
        for (std::uint16_t i = 0; i < entries; ++i) {
            const bool last = i == n;
            t.set(indirect, i, t.buffer + i, static_cast<std::uint32_t>(i + 1),
                  static_cast<std::uint16_t>(last ? VRING_DESC_F_WRITE : VRING_DESC_F_NEXT),
                  static_cast<std::uint16_t>(i + 1));
        }
        t.set(0, indirect, 16U * entries, VRING_DESC_F_INDIRECT);
        const DescriptorChain walked = t.walk(0);
        REQUIRE(walked.is_valid());
        DescriptorChain copy = walked;
        const DescriptorChain moved = std::move(copy);
        for (const DescriptorChain* chain : {&walked, &moved}) {
            REQUIRE(chain->descriptors().size() == entries);
            CHECK(chain->readable().size() == n);
            CHECK(chain->writable().size() == 1);
            bool same = true;
            for (std::uint16_t i = 0; i < entries; ++i) {
                const auto& d = chain->descriptors()[i];
                same = same && d.addr.value == t.buffer + i && d.len == i + 1U && d.device_writable == (i == n);
            }
            CHECK(same);
            CHECK(chain->readable_bytes() == std::uint64_t{n} * (n + 1) / 2);
            CHECK(chain->writable_bytes() == n + 1U);
        }
    }
}

TEST_CASE("DescriptorChain that fails after the inline capacity exposes no buffers") {
    Table t;
    const std::uint64_t indirect = t.ram.alloc(16ULL * 20, 16);
    for (std::uint16_t i = 0; i < 20; ++i)  // 18 writable, then a readable one: invalid order
        t.set(indirect, i, t.buffer, 4,
              static_cast<std::uint16_t>((i < 18 ? VRING_DESC_F_WRITE : 0) | VRING_DESC_F_NEXT),
              static_cast<std::uint16_t>(i + 1));
    t.set(indirect, 19, t.buffer, 4, 0);
    t.set(0, indirect, 16U * 20, VRING_DESC_F_INDIRECT);
    const DescriptorChain chain = t.walk(0);
    CHECK(chain.error() == ChainError::ReadableAfterWritable);
    CHECK(chain.descriptors().empty());
    CHECK(chain.readable().empty());
    CHECK(chain.writable().empty());
    CHECK(chain.writable_bytes() == 0);
}
