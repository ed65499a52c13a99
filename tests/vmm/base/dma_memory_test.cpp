// vmm::DmaMemory directly, the one path every device's DMA takes: identity (no IOMMU) and through
// a Translator (here a scripted one that hands out fixed fragments), with the rule that an access
// is whole or nothing: no byte moves unless every fragment lies in guest RAM and the translator
// allowed all of it.
#include "vmm/base/dma_memory.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <memory>
#include <vector>

using vmm::Access;
using vmm::DmaMemory;
using vmm::GuestMemory;
using vmm::GuestPhysAddr;
using vmm::GuestRange;
using vmm::Iova;

namespace {

constexpr std::uint64_t kRam = 0x4000'0000;
constexpr std::uint64_t kRamSize = 0x10000;

GuestRange range(std::uint64_t base, std::uint64_t size) { return *GuestRange::make(GuestPhysAddr{base}, size); }

// Translates any range it is asked for into the fragments it was given (in order, each cut to
// what is still wanted), or refuses (no visitor call) when `allow` is false. Records what it saw.
class ScriptedTranslator final : public vmm::Translator {
public:
    struct Fragment {
        std::uint64_t gpa;
        std::uint64_t length;
    };
    std::vector<Fragment> fragments;
    bool allow = true;
    mutable std::vector<Access> seen;

    bool translate(Iova, std::uint64_t length, Access access, vmm::FragmentVisitor& visitor) const override {
        seen.push_back(access);
        if (!allow || length == 0) return false;
        std::uint64_t left = length;
        for (const Fragment& f : fragments) {
            if (left == 0) break;
            const std::uint64_t take = f.length < left ? f.length : left;
            if (!visitor.visit(GuestPhysAddr{f.gpa}, take)) return false;
            left -= take;
        }
        return left == 0;
    }
};

struct Fixture {
    std::array<GuestRange, 1> ranges{range(kRam, kRamSize)};
    GuestMemory memory{ranges};
    std::shared_ptr<ScriptedTranslator> translator = std::make_shared<ScriptedTranslator>();
    DmaMemory identity{memory};
    DmaMemory translated{memory, translator};

    std::uint8_t byte_at(std::uint64_t gpa) const { return *memory.read_obj<std::uint8_t>(GuestPhysAddr{gpa}); }
};

}  // namespace

TEST_CASE("DmaMemory without an IOMMU uses bus addresses as guest-physical ones") {
    Fixture f;
    CHECK_FALSE(f.identity.is_translated());
    CHECK(f.identity.write_obj(Iova{kRam + 0x100}, std::uint32_t{0xa1b2c3d4}));
    CHECK(f.memory.read_obj<std::uint32_t>(GuestPhysAddr{kRam + 0x100}) == 0xa1b2c3d4u);
    CHECK(f.identity.read_obj<std::uint32_t>(Iova{kRam + 0x100}) == 0xa1b2c3d4u);
    // Outside RAM, or straddling its end: refused, nothing written.
    CHECK_FALSE(f.identity.read_obj<std::uint32_t>(Iova{kRam - 4}));
    CHECK_FALSE(f.identity.write_obj(Iova{kRam + kRamSize - 2}, std::uint32_t{0xffffffff}));
    CHECK(f.byte_at(kRam + kRamSize - 2) == 0);
    CHECK(f.byte_at(kRam + kRamSize - 1) == 0);
}

TEST_CASE("DmaMemory treats an empty read or write as done and a zero-length access as refused") {
    Fixture f;
    CHECK(f.translated.read(Iova{0}, {}));
    CHECK(f.translated.write(Iova{0}, {}));
    CHECK(f.translator->seen.empty());  // nothing asked of the IOMMU for no bytes
    struct Never final : vmm::HostVisitor {
        bool visit(std::uint8_t*, std::uint64_t) override { return false; }
    } never;
    CHECK_FALSE(f.identity.access(Iova{kRam}, 0, Access::Read, never));
    CHECK_FALSE(f.translated.access(Iova{kRam}, 0, Access::Read, never));
}

TEST_CASE("DmaMemory through a translator gathers and scatters across guest-physical fragments") {
    Fixture f;
    CHECK(f.translated.is_translated());
    // IOVA 0x1000..0x1007 -> 4 bytes at RAM + 0x800, then 4 bytes at RAM + 0x200.
    f.translator->fragments = {{kRam + 0x800, 4}, {kRam + 0x200, 4}};
    const std::array<std::uint8_t, 8> data{1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(f.translated.write(Iova{0x1000}, data));
    CHECK(f.byte_at(kRam + 0x800) == 1);
    CHECK(f.byte_at(kRam + 0x803) == 4);
    CHECK(f.byte_at(kRam + 0x200) == 5);
    CHECK(f.byte_at(kRam + 0x203) == 8);
    std::array<std::uint8_t, 8> back{};
    CHECK(f.translated.read(Iova{0x1000}, back));
    CHECK(back == data);
    CHECK(f.translator->seen == std::vector<Access>{Access::Write, Access::Read});
}

TEST_CASE("DmaMemory moves no byte when one fragment lies outside guest RAM") {
    Fixture f;
    // The first fragment is good, the second is past the end of RAM: the first must stay untouched.
    f.translator->fragments = {{kRam + 0x10, 4}, {kRam + kRamSize, 4}};
    const std::array<std::uint8_t, 8> data{9, 9, 9, 9, 9, 9, 9, 9};
    CHECK_FALSE(f.translated.write(Iova{0x2000}, data));
    for (std::uint64_t i = 0; i < 4; ++i) CHECK(f.byte_at(kRam + 0x10 + i) == 0);
}

TEST_CASE("DmaMemory fails an access the translator refuses or covers only in part") {
    Fixture f;
    std::array<std::uint8_t, 8> out{};
    f.translator->allow = false;
    f.translator->fragments = {{kRam, 8}};
    CHECK_FALSE(f.translated.read(Iova{0x3000}, out));

    f.translator->allow = true;
    f.translator->fragments = {{kRam, 4}};  // only half of what is asked
    const std::array<std::uint8_t, 8> data{7, 7, 7, 7, 7, 7, 7, 7};
    CHECK_FALSE(f.translated.write(Iova{0x3000}, data));
    CHECK(f.byte_at(kRam) == 0);
}
