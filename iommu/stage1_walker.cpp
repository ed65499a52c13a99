// Stage-1 walker: Arm ARM (DDI 0487), "The VMSAv8-64 translation table format" (descriptor
// encodings, table and block levels per granule) and "Translation table walks" (level count from
// the input size and the granule), restricted as iommu/page_tables.md says.
#include "iommu/stage1_walker.hpp"

#include <endian.h>

#include <algorithm>
#include <array>
#include <bit>

namespace iommu {
namespace {

// Descriptor bits (Arm ARM, "VMSAv8-64 translation table level 0, level 1, and level 2 descriptor
// formats" and "level 3 descriptor format").
constexpr std::uint64_t kValid = 1ULL << 0;
constexpr std::uint64_t kTableOrPage = 1ULL << 1;      // levels 0-2: table; level 3: page
constexpr std::uint64_t kApReadOnly = 1ULL << 7;       // AP[2]
constexpr std::uint64_t kAccessFlag = 1ULL << 10;      // AF
constexpr std::uint64_t kNotGlobal = 1ULL << 11;       // nG
constexpr std::uint64_t kApTableNoWrite = 1ULL << 62;  // APTable[1]
// Output / next-table address bits [51:12]. Bits below the granule (16K: [13:12], 64K: [15:12],
// the latter OA[51:48] with FEAT_LPA, which we lack) must be zero; bits at or above the output
// size fault, which covers [51:48] since IPS is at most 48 bits here.
constexpr std::uint64_t kAddressMask = 0x000f'ffff'ffff'f000ULL;

constexpr std::array<unsigned, 6> kIpsBits{32, 36, 40, 42, 44, 48};

// A block descriptor exists at `level` for this granule (no FEAT_LPA/LPA2): 4K has 1 GiB and 2 MiB
// blocks at levels 1 and 2; 16K (32 MiB) and 64K (512 MiB) only at level 2.
bool has_block(unsigned granule_shift, unsigned level) { return level == 2 || (granule_shift == 12 && level == 1); }

// Levels a walk needs for `input_bits` with this granule (what Linux's io-pgtable computes too,
// drivers/iommu/io-pgtable-arm.c): each level resolves granule_shift - 3 bits.
unsigned level_count(unsigned input_bits, unsigned granule_shift) {
    const unsigned per_level = granule_shift - 3;
    return (input_bits - granule_shift + per_level - 1) / per_level;
}

// log2 of the bytes one entry of `level` covers.
unsigned level_shift(const Stage1Config& config, unsigned level) {
    return config.granule_shift + (3 - level) * config.bits_per_level();
}

}  // namespace

std::optional<unsigned> ips_bits(unsigned ips) {
    if (ips >= kIpsBits.size()) return std::nullopt;
    return kIpsBits[ips];
}

unsigned ips_bits_covering(std::uint64_t last_address) {
    const unsigned needed = static_cast<unsigned>(std::bit_width(last_address));
    for (unsigned bits : kIpsBits)
        if (bits >= needed) return bits;
    return kIpsBits.back();
}

std::optional<Stage1Config> decode_stage1(std::uint64_t tcr_value, std::uint64_t ttbr) {
    Stage1Config config;
    const unsigned t0sz = static_cast<unsigned>(tcr_value & tcr::kT0szMask);
    if (t0sz < tcr::kMinT0sz || t0sz > tcr::kMaxT0sz) return std::nullopt;
    switch ((tcr_value >> tcr::kTg0Shift) & 3) {
        case tcr::kTg0For4K: config.granule_shift = 12; break;
        case tcr::kTg0For16K: config.granule_shift = 14; break;
        case tcr::kTg0For64K: config.granule_shift = 16; break;
        default: return std::nullopt;  // 0b11 is reserved
    }
    const auto output_bits = ips_bits(static_cast<unsigned>((tcr_value >> tcr::kIpsShift) & 7));
    if (!output_bits) return std::nullopt;
    // The device neither sets AF/dirty state nor ignores the top byte: a table that relies on it
    // would see faults or wrong translations, so it is refused up front.
    if (tcr_value & (tcr::kHa | tcr::kHd | tcr::kTbi0)) return std::nullopt;
    config.input_bits = 64 - t0sz;
    config.output_bits = *output_bits;
    config.walks_disabled = (tcr_value & tcr::kEpd0) != 0;
    config.hierarchical_permissions = (tcr_value & tcr::kHpd0) == 0;
    const unsigned levels = level_count(config.input_bits, config.granule_shift);
    config.start_level = 4 - levels;
    // The start-level table resolves what the lower levels leave of the input bits.
    const unsigned root_bits = config.input_bits - level_shift(config, config.start_level);
    const std::uint64_t root_size = std::uint64_t{8} << root_bits;
    // TTBR0_EL1.BADDR is [47:1]; CnP (bit 0) and the ASID field [63:48] are ignored.
    config.root = ttbr & 0x0000'ffff'ffff'fffeULL;
    if (config.root & (root_size - 1)) return std::nullopt;
    if (config.root >> config.output_bits) return std::nullopt;
    return config;
}

const char* walk_error_name(WalkError error) {
    switch (error) {
        case WalkError::WalksDisabled: return "walks disabled (EPD0)";
        case WalkError::InputSize: return "input address above T0SZ";
        case WalkError::TableOutsideRam: return "table outside guest RAM";
        case WalkError::Invalid: return "invalid descriptor";
        case WalkError::Misaligned: return "misaligned output address";
        case WalkError::AddressSize: return "address above IPS";
        case WalkError::AccessFlag: return "access flag clear";
    }
    return "?";
}

namespace {

// What one descriptor means at `level` (the checks of the Arm ARM's descriptor formats that
// page_tables.md lists), shared by the walk and the leaf scan so that both see the same table.
struct Decoded {
    enum class Kind : std::uint8_t { Fault, Table, Leaf } kind = Kind::Fault;
    WalkError error = WalkError::Invalid;
    std::uint64_t address = 0;  // next table or output address
};

Decoded decode(const Stage1Config& config, unsigned level, std::uint64_t desc) {
    auto fault = [](WalkError error) { return Decoded{Decoded::Kind::Fault, error, 0}; };
    if (!(desc & kValid)) return fault(WalkError::Invalid);
    const std::uint64_t address = desc & kAddressMask;
    const std::uint64_t granule_mask = (std::uint64_t{1} << config.granule_shift) - 1;
    if (address >> config.output_bits) return fault(WalkError::AddressSize);
    if (level < 3 && (desc & kTableOrPage)) {
        if (address & granule_mask) return fault(WalkError::Misaligned);
        return Decoded{Decoded::Kind::Table, WalkError::Invalid, address};
    }
    // A leaf: a page at level 3 (bits [1:0] = 0b11; 0b01 is reserved there), or a block.
    if (level == 3 ? !(desc & kTableOrPage) : !has_block(config.granule_shift, level)) return fault(WalkError::Invalid);
    const std::uint64_t leaf_mask = (std::uint64_t{1} << level_shift(config, level)) - 1;
    if (address & leaf_mask) return fault(WalkError::Misaligned);
    if (!(desc & kAccessFlag)) return fault(WalkError::AccessFlag);
    return Decoded{Decoded::Kind::Leaf, WalkError::Invalid, address};
}

// APTable[1] of a table descriptor takes write permission away below it (unless HPD0).
bool table_allows_writes(const Stage1Config& config, std::uint64_t desc) {
    return !(config.hierarchical_permissions && (desc & kApTableNoWrite));
}

Stage1Leaf make_leaf(std::uint64_t iova_base, std::uint64_t gpa, unsigned shift, bool writable, std::uint64_t desc) {
    Stage1Leaf leaf;
    leaf.iova_base = iova_base;
    leaf.gpa_base = gpa;
    leaf.size_shift = static_cast<std::uint8_t>(shift);
    leaf.writable = writable && !(desc & kApReadOnly);
    leaf.global = !(desc & kNotGlobal);
    return leaf;
}

// Index bits the table of `level` resolves (the start level's table may be smaller).
unsigned index_bits(const Stage1Config& config, unsigned level) {
    return level == config.start_level ? config.input_bits - level_shift(config, level) : config.bits_per_level();
}

}  // namespace

WalkResult walk_stage1(const Stage1Config& config, const vmm::GuestMemory& ram, std::uint64_t iova) {
    WalkResult result;
    result.level = config.start_level;
    auto fail = [&](WalkError error) {
        result.error = error;
        return result;
    };
    if (config.walks_disabled) return fail(WalkError::WalksDisabled);
    if (config.input_bits < 64 && (iova >> config.input_bits) != 0) return fail(WalkError::InputSize);

    std::uint64_t table = config.root;
    bool writable = true;
    // One descriptor per level from the start level down to 3: at most four reads, whatever the
    // tables contain (a table pointing at itself only costs the remaining levels).
    for (unsigned level = config.start_level; level <= 3; ++level) {
        result.level = level;
        const unsigned shift = level_shift(config, level);
        const std::uint64_t index = (iova >> shift) & ((std::uint64_t{1} << index_bits(config, level)) - 1);
        // table < 2^48 and index < 2^13: no overflow. read_obj refuses anything outside RAM.
        const auto raw = ram.read_obj<std::uint64_t>(vmm::GuestPhysAddr{table + index * 8});
        if (!raw) return fail(WalkError::TableOutsideRam);
        const std::uint64_t desc = le64toh(*raw);
        const Decoded decoded = decode(config, level, desc);
        switch (decoded.kind) {
            case Decoded::Kind::Fault: return fail(decoded.error);
            case Decoded::Kind::Table:
                writable = writable && table_allows_writes(config, desc);
                table = decoded.address;
                continue;
            case Decoded::Kind::Leaf:
                result.leaf =
                    make_leaf(iova & ~((std::uint64_t{1} << shift) - 1), decoded.address, shift, writable, desc);
                return result;
        }
    }
    return fail(WalkError::Invalid);  // not reached: level 3 always ends the walk
}

namespace {

// The recursion of scan_stage1: one table of `level` whose first entry translates `base`.
class LeafScanner {
public:
    LeafScanner(const Stage1Config& config, const vmm::GuestMemory& ram, std::uint64_t first, std::uint64_t last,
                std::uint64_t max_reads, const std::function<void(const Stage1Leaf&)>& visit)
        : config_(config), ram_(ram), first_(first), last_(last), max_reads_(max_reads), visit_(visit) {}

    // False once the read budget ran out (result().resume says where).
    bool scan(std::uint64_t table, unsigned level, std::uint64_t base, bool writable) {
        const unsigned shift = level_shift(config_, level);
        // base + the table's span - 1 stays below 2^input_bits <= 2^48: no overflow.
        const std::uint64_t table_last = base + ((std::uint64_t{1} << (index_bits(config_, level) + shift)) - 1);
        const std::uint64_t lo = (std::max(first_, base) - base) >> shift;
        const std::uint64_t hi = (std::min(last_, table_last) - base) >> shift;
        for (std::uint64_t index = lo; index <= hi; ++index) {
            const std::uint64_t slot_base = base + (index << shift);
            if (result_.reads == max_reads_) {
                result_.complete = false;
                result_.resume = std::max(slot_base, first_);
                return false;
            }
            ++result_.reads;
            const auto raw = ram_.read_obj<std::uint64_t>(vmm::GuestPhysAddr{table + index * 8});
            if (!raw) continue;  // a walk through this slot faults (TableOutsideRam)
            const std::uint64_t desc = le64toh(*raw);
            const Decoded decoded = decode(config_, level, desc);
            if (decoded.kind == Decoded::Kind::Table) {
                if (!scan(decoded.address, level + 1, slot_base, writable && table_allows_writes(config_, desc)))
                    return false;
            } else if (decoded.kind == Decoded::Kind::Leaf) {
                visit_(make_leaf(slot_base, decoded.address, shift, writable, desc));
            }
        }
        return true;
    }
    const LeafScan& result() const { return result_; }

private:
    const Stage1Config& config_;
    const vmm::GuestMemory& ram_;
    const std::uint64_t first_, last_, max_reads_;
    const std::function<void(const Stage1Leaf&)>& visit_;
    LeafScan result_;
};

}  // namespace

LeafScan scan_stage1(const Stage1Config& config, const vmm::GuestMemory& ram, std::uint64_t first, std::uint64_t last,
                     std::uint64_t max_reads, const std::function<void(const Stage1Leaf&)>& visit) {
    // Nothing translates with EPD0 or at or above 2^input_bits (input_bits <= 48 here).
    const std::uint64_t input_last = (std::uint64_t{1} << config.input_bits) - 1;
    if (config.walks_disabled || first > last || first > input_last) return LeafScan{};
    LeafScanner scanner(config, ram, first, std::min(last, input_last), max_reads, visit);
    scanner.scan(config.root, config.start_level, 0, true);
    return scanner.result();
}

}  // namespace iommu
