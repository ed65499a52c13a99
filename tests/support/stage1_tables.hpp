// Test-only builder of Arm VMSAv8-64 stage-1 translation tables in fake guest RAM, as a guest
// driver would build them for page-table handover (iommu/page_tables.md): tables allocated on
// demand, leaves of any size the granule allows, and raw access to every descriptor so tests can
// break them on purpose. It shares no code with iommu/stage1_walker.cpp: the level arithmetic is
// written out again here from the Arm ARM so that a mistake there cannot hide in both.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "tests/support/fake_driver.hpp"

namespace support {

// Descriptor bits (Arm ARM, "VMSAv8-64 translation table format descriptors").
inline constexpr std::uint64_t kDescValid = 1ULL << 0;
inline constexpr std::uint64_t kDescTable = 1ULL << 1;     // levels 0-2: table; level 3: page
inline constexpr std::uint64_t kDescReadOnly = 1ULL << 7;  // AP[2]
inline constexpr std::uint64_t kDescAf = 1ULL << 10;
inline constexpr std::uint64_t kDescNg = 1ULL << 11;
inline constexpr std::uint64_t kDescApTableNoWrite = 1ULL << 62;

class Stage1Tables {
public:
    // A 4K/16K/64K (granule_shift 12/14/16) table for `input_bits`-bit IOVAs.
    Stage1Tables(FakeGuestRam& ram, unsigned granule_shift, unsigned input_bits = 48)
        : ram_(ram), granule_shift_(granule_shift), input_bits_(input_bits) {
        const unsigned per_level = granule_shift - 3;
        const unsigned levels = (input_bits - granule_shift + per_level - 1) / per_level;
        start_level_ = 4 - levels;
        const unsigned root_bits = input_bits - shift_of(start_level_);
        const std::uint64_t root_size = std::uint64_t{8} << root_bits;
        root_ = ram_.alloc(root_size < 64 ? 64 : root_size, root_size < 64 ? 64 : root_size);
    }

    std::uint64_t root() const { return root_; }
    unsigned start_level() const { return start_level_; }
    unsigned granule_shift() const { return granule_shift_; }
    // log2 of what one entry of `level` covers.
    unsigned shift_of(unsigned level) const { return granule_shift_ + (3 - level) * (granule_shift_ - 3); }

    // TCR_EL1 for these tables: T0SZ, TG0 and IPS (0b101 = 48 bits unless given), plus `extra`.
    std::uint64_t tcr(unsigned ips = 5, std::uint64_t extra = 0) const {
        const std::uint64_t tg0 = granule_shift_ == 12 ? 0b00 : granule_shift_ == 14 ? 0b10 : 0b01;
        return (64 - input_bits_) | (tg0 << 14) | (std::uint64_t{ips} << 32) | extra;
    }

    // Maps [iova, iova + 2^shift_of(level)) to gpa with a leaf at `level` (3: a page, else a
    // block); `attrs` are added to valid, the type bits and (unless told otherwise) AF.
    void map(std::uint64_t iova, std::uint64_t gpa, unsigned level = 3, std::uint64_t attrs = kDescAf) {
        const std::uint64_t type = level == 3 ? kDescTable : 0;
        set(iova, level, gpa | kDescValid | type | attrs);
    }
    // Clears the leaf (or table) entry for iova at `level`.
    void unmap(std::uint64_t iova, unsigned level = 3) { set(iova, level, 0); }

    // The address of the descriptor for iova at `level`, creating the tables above it.
    std::uint64_t slot(std::uint64_t iova, unsigned level) {
        std::uint64_t table = root_;
        for (unsigned l = start_level_;; ++l) {
            const unsigned shift = shift_of(l);
            const std::uint64_t index_mask = l == start_level_ ? (std::uint64_t{1} << (input_bits_ - shift)) - 1
                                                               : (1ULL << (granule_shift_ - 3)) - 1;
            const std::uint64_t at = table + ((iova >> shift) & index_mask) * 8;
            if (l == level) return at;
            std::uint64_t desc = ram_.read_obj<std::uint64_t>(at);
            if (!(desc & kDescValid) || !(desc & kDescTable)) {
                const std::uint64_t size = std::uint64_t{1} << granule_shift_;
                desc = ram_.alloc(size, size) | kDescValid | kDescTable;
                ram_.write_obj(at, desc);
            }
            table = desc & 0x0000'ffff'ffff'f000ULL & ~((std::uint64_t{1} << granule_shift_) - 1);
            if (l == 3) throw std::runtime_error("Stage1Tables: level out of range");
        }
    }
    void set(std::uint64_t iova, unsigned level, std::uint64_t desc) { ram_.write_obj(slot(iova, level), desc); }
    std::uint64_t get(std::uint64_t iova, unsigned level) { return ram_.read_obj<std::uint64_t>(slot(iova, level)); }

private:
    FakeGuestRam& ram_;
    unsigned granule_shift_;
    unsigned input_bits_;
    unsigned start_level_ = 0;
    std::uint64_t root_ = 0;
};

}  // namespace support
