#include "vmm/base/layout.hpp"

#include <doctest/doctest.h>

#include <iterator>

namespace layout = vmm::layout;

TEST_CASE("The memory map's MMIO regions do not overlap each other or RAM") {
    const vmm::GuestRange regions[] = {
        layout::kUart,
        layout::virtio_mmio_slot(0),
        layout::virtio_mmio_slot(layout::kVirtioMmioSlots - 1),
        layout::kGicDist,
        layout::kGicIts,
        layout::gic_redistributors(layout::kMaxVcpus),
        layout::range(layout::kPcieEcamBase, layout::kPcieEcamSize),
        layout::range(layout::kPcieMmio32Base, layout::kPcieMmio32Size),
        *layout::ram(layout::kMaxRamSize),
        layout::range(layout::kPcieMmio64Base, layout::kPcieMmio64Size),
    };
    for (std::size_t i = 0; i < std::size(regions); ++i)
        for (std::size_t j = i + 1; j < std::size(regions); ++j) CHECK_FALSE(regions[i].overlaps(regions[j]));
}

TEST_CASE("IPA bits follow the top of RAM and never go below KVM's minimum of 32") {
    CHECK(layout::ipa_bits_for(256ull << 20) == 32);
    CHECK(layout::ipa_bits_for(2ull << 30) == 32);
    CHECK(layout::ipa_bits_for((2ull << 30) + (1ull << 20)) == 33);
    CHECK(layout::ipa_bits_for(layout::kMaxRamSize) == 39);
    CHECK(layout::ipa_bits_for(256ull << 20, true) == 40);
}

TEST_CASE("max_ram_for_ipa is the inverse of ipa_bits_for") {
    for (unsigned bits : {32u, 33u, 36u, 39u}) {
        std::uint64_t max = layout::max_ram_for_ipa(bits);
        CHECK(layout::ipa_bits_for(max) <= bits);
    }
    CHECK(layout::max_ram_for_ipa(31) == 0);
    CHECK(layout::max_ram_for_ipa(48) == layout::kMaxRamSize);
}

TEST_CASE("virtio-mmio slots are 0x200 apart with consecutive SPIs") {
    CHECK(layout::virtio_mmio_slot(1).base().value - layout::virtio_mmio_slot(0).base().value == 0x200);
    CHECK(layout::virtio_mmio_spi(3) == layout::virtio_mmio_spi(0) + 3);
    CHECK(layout::ram(0) == std::nullopt);
}
