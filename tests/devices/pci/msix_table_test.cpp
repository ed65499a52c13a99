#include "devices/pci/msix_table.hpp"

#include <doctest/doctest.h>

#include <array>

#include "devices/pci/config_space.hpp"

using devices::pci::MsixTable;

namespace {

std::array<std::uint8_t, 4> le32(std::uint32_t v) {
    return {static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v >> 16),
            static_cast<std::uint8_t>(v >> 24)};
}

}  // namespace

TEST_CASE("MsixTable starts disabled with every vector masked") {
    MsixTable t(4);
    CHECK(t.vectors() == 4);
    CHECK(t.table_bytes() == 64);
    CHECK(t.pba_bytes() == 8);
    CHECK(t.control() == 3);  // table size N - 1
    for (unsigned v = 0; v < 4; ++v) {
        CHECK(t.vector_masked(v));
        CHECK_FALSE(t.deliverable(v));
    }
}

TEST_CASE("MsixTable programs a vector with DWORD writes and reports which vector changed") {
    MsixTable t(4);
    std::optional<unsigned> changed;
    CHECK(t.write_table(16 + 0, le32(0x08090043), changed));  // low two bits are read-only zero
    CHECK(changed == 1u);
    CHECK(t.write_table(16 + 4, le32(0), changed));
    CHECK_FALSE(changed);  // unchanged value
    CHECK(t.write_table(16 + 8, le32(7), changed));
    CHECK(t.write_table(16 + 12, le32(0xfffffffe), changed));  // unmask; reserved bits stay 0
    CHECK(changed == 1u);
    CHECK(t.message(1) == devices::pci::MsiMessage{0x08090040, 7});
    CHECK_FALSE(t.vector_masked(1));
    CHECK_FALSE(t.deliverable(1));  // MSI-X not enabled yet

    CHECK(t.write_control(0x8000));
    CHECK(t.deliverable(1));
    CHECK_FALSE(t.write_control(0xc000));  // function mask: enable unchanged
    CHECK_FALSE(t.deliverable(1));
    CHECK(t.control() == (0xc000 | 3));

    std::array<std::uint8_t, 4> out{};
    CHECK(t.read_table(16 + 12, out));
    CHECK(devices::pci::load_le(out) == 0);
}

TEST_CASE("MsixTable refuses unaligned, odd-sized and out-of-range accesses") {
    MsixTable t(2);
    std::optional<unsigned> changed;
    std::array<std::uint8_t, 4> four{};
    std::array<std::uint8_t, 2> two{};
    std::array<std::uint8_t, 8> eight{};
    CHECK_FALSE(t.read_table(2, four));
    CHECK_FALSE(t.read_table(0, two));
    CHECK_FALSE(t.read_table(32, four));
    CHECK_FALSE(t.write_table(4, eight, changed));  // QWORD must be 8-aligned
    CHECK(t.read_table(8, eight));
    CHECK(t.write_table(0, eight, changed));
    CHECK_FALSE(t.read_table(~std::uint64_t{0} - 3, four));
}

TEST_CASE("MsixTable PBA shows pending bits from the owner and ignores nothing else") {
    MsixTable t(70);
    CHECK(t.pba_bytes() == 16);
    std::array<std::uint8_t, 8> out{};
    CHECK(t.read_pba(8, out, [](unsigned v) { return v == 65 || v == 3; }));
    CHECK(devices::pci::load_le(out) == (std::uint64_t{1} << 1));
    CHECK(t.read_pba(0, out, [](unsigned v) { return v == 3; }));
    CHECK(devices::pci::load_le(out) == 8);
    CHECK_FALSE(t.read_pba(16, out, [](unsigned) { return true; }));
}

TEST_CASE("MsixTable QWORD writes update both halves of an entry") {
    MsixTable t(1);
    std::optional<unsigned> changed;
    const std::array<std::uint8_t, 8> msg{0x40, 0x00, 0x09, 0x08, 0x00, 0x00, 0x00, 0x00};
    CHECK(t.write_table(0, msg, changed));
    CHECK(t.message(0).address == 0x08090040);
    t.reset();
    CHECK(t.message(0).address == 0);
    CHECK(t.vector_masked(0));
}
