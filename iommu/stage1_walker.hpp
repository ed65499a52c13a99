// The stage-1 walker of page-table handover (iommu/page_tables.md): Arm VMSAv8-64 translation
// tables that the guest built in its own RAM, read through vmm::GuestMemory. Every descriptor
// and table address is guest input: a walk reads at most one descriptor per level (four at
// most), checks every table address against guest RAM before reading it, and ends with a
// WalkError instead of ever reading elsewhere. Stateless; safe from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "vmm/base/guest_memory.hpp"

namespace iommu {

// TCR_EL1 and TTBR0_EL1 fields the walker reads (Arm ARM, "TCR_EL1, Translation Control
// Register (EL1)" and "TTBR0_EL1"); page_tables.md lists what ATTACH_TABLE accepts.
namespace tcr {
inline constexpr std::uint64_t kT0szMask = 0x3f;    // [5:0]
inline constexpr std::uint64_t kEpd0 = 1ULL << 7;   // walks through TTBR0 fault
inline constexpr unsigned kTg0Shift = 14;           // [15:14]
inline constexpr unsigned kIpsShift = 32;           // [34:32]
inline constexpr std::uint64_t kTbi0 = 1ULL << 37;  // top byte ignored: refused
inline constexpr std::uint64_t kHa = 1ULL << 39;    // hardware access flag: refused
inline constexpr std::uint64_t kHd = 1ULL << 40;    // hardware dirty state: refused
inline constexpr std::uint64_t kHpd0 = 1ULL << 41;  // APTable ignored
inline constexpr unsigned kTg0For4K = 0b00, kTg0For64K = 0b01, kTg0For16K = 0b10;
inline constexpr unsigned kMinT0sz = 16, kMaxT0sz = 39;  // input 48..25 bits
}  // namespace tcr

// What a validated TCR/TTBR pair means to the walker (decode_stage1 builds it).
struct Stage1Config {
    unsigned granule_shift = 12;           // 12 (4K), 14 (16K), 16 (64K)
    unsigned input_bits = 48;              // 64 - T0SZ: inputs at or above 2^input_bits fault
    unsigned output_bits = 48;             // from IPS: outputs at or above 2^output_bits fault
    unsigned start_level = 0;              // 0..3; the walk ends at level 3 at the latest
    std::uint64_t root = 0;                // guest-physical address of the start-level table
    bool walks_disabled = false;           // EPD0
    bool hierarchical_permissions = true;  // !HPD0: APTable[1] in table descriptors applies

    unsigned bits_per_level() const { return granule_shift - 3; }
    bool operator==(const Stage1Config&) const = default;
};

// TCR and TTBR as ATTACH_TABLE hands them over, or nothing if page_tables.md's table refuses
// them (the request then answers S_INVAL). Reserved TCR bits are ignored, as listed there.
std::optional<Stage1Config> decode_stage1(std::uint64_t tcr, std::uint64_t ttbr);

// IPS encodings (TCR_EL1.IPS) in output bits; 52 is not supported (no FEAT_LPA).
std::optional<unsigned> ips_bits(unsigned ips);
// The smallest IPS output size that covers [0, last_address].
unsigned ips_bits_covering(std::uint64_t last_address);

// Leaf sizes a walk can end with, as a page_size bitmap: 4K/2M/1G, 16K/32M, 64K/512M.
inline constexpr std::uint64_t kStage1PageSizes =
    (1ULL << 12) | (1ULL << 21) | (1ULL << 30) | (1ULL << 14) | (1ULL << 25) | (1ULL << 16) | (1ULL << 29);

// One translation found by a walk: [iova_base, iova_base + 2^size_shift) -> gpa_base.
struct Stage1Leaf {
    std::uint64_t iova_base = 0;
    std::uint64_t gpa_base = 0;
    std::uint8_t size_shift = 12;
    bool writable = false;  // AP[2] == 0 and no APTable[1] above it (unless HPD0)
    bool global = true;     // nG == 0: not tagged with the ASID

    std::uint64_t size() const { return std::uint64_t{1} << size_shift; }
    bool operator==(const Stage1Leaf&) const = default;
};

// Why a walk ended without a leaf (each is a translation fault to the device).
enum class WalkError : std::uint8_t {
    WalksDisabled,    // EPD0
    InputSize,        // the IOVA is at or above 2^input_bits
    TableOutsideRam,  // a table address is not guest RAM
    Invalid,          // bit 0 clear, a reserved encoding, or a block where the granule has none
    Misaligned,       // address bits below the block or page size are not zero
    AddressSize,      // an output or table address at or above 2^output_bits
    AccessFlag,       // AF == 0 (the device never sets it, PROBE says so)
};
const char* walk_error_name(WalkError error);

struct WalkResult {
    std::optional<Stage1Leaf> leaf;  // set on success
    WalkError error = WalkError::Invalid;
    unsigned level = 0;  // the level that produced the leaf or the error
};

// Translates `iova` through the tables described by `config` in `ram`.
WalkResult walk_stage1(const Stage1Config& config, const vmm::GuestMemory& ram, std::uint64_t iova);

// How a scan_stage1 ended.
struct LeafScan {
    bool complete = true;      // false: the read budget ran out before `last`
    std::uint64_t resume = 0;  // !complete: the first IOVA not scanned (everything below was)
    std::uint64_t reads = 0;   // descriptors read
};

// Calls `visit` with every leaf that translates some IOVA of [first, last], in IOVA order, each
// exactly as walk_stage1 returns it for its addresses (a block may extend beyond [first, last]).
// It reads every descriptor slot of [first, last] in the tables on the way and descends only
// into valid table descriptors, so its cost is the number of valid tables it meets, bounded by
// `max_reads` descriptor reads: past that it stops and says where. Like a walk, it checks every
// table address against guest RAM before reading it; a table that points back up the hierarchy
// costs reads, never more than four levels of recursion.
LeafScan scan_stage1(const Stage1Config& config, const vmm::GuestMemory& ram, std::uint64_t first, std::uint64_t last,
                     std::uint64_t max_reads, const std::function<void(const Stage1Leaf&)>& visit);

}  // namespace iommu
