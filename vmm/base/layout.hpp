// The arm64 guest-physical memory map and interrupt numbering: every address and SPI lkvm gives the
// guest is defined here and nowhere else. GIC sizes:
// Documentation/virt/kvm/devices/arm-vgic-v3.rst; RAM/kernel: booting.rst.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>

#include "vmm/base/address.hpp"

namespace vmm::layout {

//  Guest physical address space (IPA). Everything below RAM is MMIO; nothing overlaps.
//
//  0x00_0000_0000 ┌──────────────────────────────┐
//                 │ unmapped (16 MiB): RAZ/WI     │  catches wild accesses near 0
//  0x00_0100_0000 ├──────────────────────────────┤
//                 │ UART 16550A (8 B in 4 KiB)    │  SPI 4, earlycon + ttyS0
//  0x00_0200_0000 ├──────────────────────────────┤
//                 │ virtio-mmio slots             │  0x200 each, slot i -> SPI 16 + i,
//                 │ (64 × 0x200 = 32 KiB)         │  in command-line order
//  0x00_0800_0000 ├──────────────────────────────┤
//                 │ GICv3 distributor (64 KiB)    │
//  0x00_0808_0000 ├──────────────────────────────┤
//                 │ GICv3 ITS (128 KiB)           │  msi-controller
//  0x00_0900_0000 ├──────────────────────────────┤
//                 │ GICv3 redistributors          │  128 KiB per vCPU, up to 512 vCPUs
//  0x00_0d00_0000 ├──────────────────────────────┤
//                 │ (free)                        │
//  0x00_1000_0000 ├──────────────────────────────┤
//                 │ PCIe ECAM (256 MiB, 256 buses)│  the generic ECAM host bridge (--vfio-pci)
//  0x00_2000_0000 ├──────────────────────────────┤
//                 │ PCIe I/O window (64 KiB)      │  in the bridge's ranges; I/O BARs unused
//  0x00_2001_0000 ├──────────────────────────────┤
//                 │ (free)                        │
//  0x00_4000_0000 ├──────────────────────────────┤
//                 │ PCIe 32-bit MMIO window (1 G) │  BARs of assigned functions
//  0x00_8000_0000 ├──────────────────────────────┤
//                 │ RAM (-m MiB), grows upward    │  kernel at the bottom, DTB at the top,
//                 │ at most 510 GiB               │  initrd just below the DTB
//  0x80_0000_0000 ├──────────────────────────────┤
//                 │ PCIe 64-bit MMIO window       │  64-bit BARs of assigned functions
//                 │ (512 GiB)                     │
//  0x100_0000_0000└──────────────────────────────┘
//
// The VM's IPA size is chosen from the highest address actually used (ipa_bits_for below), so a
// small guest gets a small stage-2 table and runs on hosts with a small IPA limit.

inline constexpr std::uint64_t kKiB = 1024;
inline constexpr std::uint64_t kMiB = 1024 * kKiB;
inline constexpr std::uint64_t kGiB = 1024 * kMiB;

inline constexpr std::uint64_t kUartBase = 0x0100'0000;
inline constexpr std::uint64_t kUartSize = 8;             // eight byte-wide registers
inline constexpr std::uint32_t kUartClockHz = 1'843'200;  // the classic 16550 crystal

inline constexpr std::uint64_t kVirtioMmioBase = 0x0200'0000;
inline constexpr std::uint64_t kVirtioMmioSlotSize = 0x200;
inline constexpr unsigned kVirtioMmioSlots = 64;

inline constexpr std::uint64_t kGicDistBase = 0x0800'0000;
inline constexpr std::uint64_t kGicDistSize = 64 * kKiB;
inline constexpr std::uint64_t kGicItsBase = 0x0808'0000;
inline constexpr std::uint64_t kGicItsSize = 128 * kKiB;
inline constexpr std::uint64_t kGicRedistBase = 0x0900'0000;
inline constexpr std::uint64_t kGicRedistSizePerCpu = 128 * kKiB;  // RD_base + SGI_base frames
inline constexpr unsigned kMaxVcpus = 512;                         // fills 64 MiB of redistributors

inline constexpr std::uint64_t kPcieEcamBase = 0x1000'0000;
inline constexpr std::uint64_t kPcieEcamSize = 256 * kMiB;
inline constexpr std::uint64_t kPcieIoBase = 0x2000'0000;
inline constexpr std::uint64_t kPcieIoSize = 64 * kKiB;
inline constexpr std::uint64_t kPcieMmio32Base = 0x4000'0000;
inline constexpr std::uint64_t kPcieMmio32Size = 1 * kGiB;

inline constexpr std::uint64_t kRamBase = 0x8000'0000;
inline constexpr std::uint64_t kPcieMmio64Base = 0x80'0000'0000;
inline constexpr std::uint64_t kPcieMmio64Size = 512 * kGiB;
inline constexpr std::uint64_t kMaxRamSize = kPcieMmio64Base - kRamBase;

// Interrupts. SPI numbers are 0-based (INTID = 32 + spi), as in the DT's GIC_SPI cells and as
// the GSI of KVM's default irqchip routing. SPIs 0-3 stay free for PCIe INTA..INTD, which no
// function gets (they use MSI-X through the ITS).
inline constexpr std::uint32_t kUartSpi = 4;
inline constexpr std::uint32_t kVirtioMmioSpiBase = 16;
// SGIs + PPIs + SPIs the vGIC implements (KVM: 64..1024 in steps of 32).
inline constexpr std::uint32_t kGicNrIrqs = 256;
static_assert(32 + kVirtioMmioSpiBase + kVirtioMmioSlots <= kGicNrIrqs);
static_assert(kGicNrIrqs % 32 == 0 && kGicNrIrqs >= 64 && kGicNrIrqs <= 1024);

// Architected timer PPIs (PPI numbers; INTID = 16 + ppi), as KVM wires them by default.
inline constexpr std::uint32_t kTimerSecurePhysPpi = 13;
inline constexpr std::uint32_t kTimerPhysPpi = 14;
inline constexpr std::uint32_t kTimerVirtPpi = 11;
inline constexpr std::uint32_t kTimerHypPpi = 10;

static_assert(kVirtioMmioBase + kVirtioMmioSlots * kVirtioMmioSlotSize <= kGicDistBase);
static_assert(kGicDistBase + kGicDistSize <= kGicItsBase);
static_assert(kGicItsBase + kGicItsSize <= kGicRedistBase);
static_assert(kGicRedistBase + kMaxVcpus * kGicRedistSizePerCpu <= kPcieEcamBase);
static_assert(kPcieEcamBase + kPcieEcamSize <= kPcieIoBase);
static_assert(kPcieMmio32Base + kPcieMmio32Size <= kRamBase);

constexpr GuestRange range(std::uint64_t base, std::uint64_t size) {
    return *GuestRange::make(GuestPhysAddr{base}, size);
}

inline constexpr GuestRange kUart = range(kUartBase, kUartSize);
inline constexpr GuestRange kGicDist = range(kGicDistBase, kGicDistSize);
inline constexpr GuestRange kGicIts = range(kGicItsBase, kGicItsSize);

constexpr GuestRange gic_redistributors(unsigned vcpus) { return range(kGicRedistBase, vcpus * kGicRedistSizePerCpu); }

// virtio-mmio slot `index` (< kVirtioMmioSlots).
constexpr GuestRange virtio_mmio_slot(unsigned index) {
    return range(kVirtioMmioBase + index * kVirtioMmioSlotSize, kVirtioMmioSlotSize);
}
constexpr std::uint32_t virtio_mmio_spi(unsigned index) { return kVirtioMmioSpiBase + index; }

// virtio-iommu endpoint IDs (the cell of `iommus = <&viommu EPID>`,
// Documentation/devicetree/bindings/virtio/mmio.yaml). Stable: they follow from the command line
// alone.
//   0x00000-0x0ffff  PCI functions: EPID = requester ID (bus << 8 | dev << 3 | fn), through the
//                    host bridge's iommu-map = <0 &viommu 0 0x10000>
//   0x10000 + i      the virtio-mmio device in slot i. With --viommu, slot 0 is the virtio-iommu
//                    itself (first, so it probes before its endpoints) and is no endpoint; the
//                    devices follow in their usual order (disks, rng, console) from slot 1.
inline constexpr std::uint32_t kVirtioMmioEndpointBase = 0x10000;
constexpr std::uint32_t virtio_mmio_endpoint(unsigned index) { return kVirtioMmioEndpointBase + index; }

// RAM for `size` bytes, or nothing when it is empty or does not fit below the 64-bit PCIe window.
constexpr std::optional<GuestRange> ram(std::uint64_t size) {
    if (size == 0 || size > kMaxRamSize) return std::nullopt;
    return range(kRamBase, size);
}

// The IPA size (bits) a VM with `ram_size` bytes of RAM needs: enough for the highest mapped
// address, and at least 32 (KVM's minimum). The PCIe windows count once a host bridge exists.
constexpr unsigned ipa_bits_for(std::uint64_t ram_size, bool with_pcie = false) {
    std::uint64_t top = kRamBase + ram_size;  // one past the last byte; ram_size <= kMaxRamSize
    if (with_pcie) top = kPcieMmio64Base + kPcieMmio64Size;
    unsigned bits = static_cast<unsigned>(std::bit_width(top - 1));
    return bits < 32 ? 32 : bits;
}

// The largest RAM size (bytes) that fits an IPA space of `ipa_bits`.
constexpr std::uint64_t max_ram_for_ipa(unsigned ipa_bits) {
    if (ipa_bits >= 64) return kMaxRamSize;
    std::uint64_t top = std::uint64_t{1} << ipa_bits;
    if (top <= kRamBase) return 0;
    std::uint64_t size = top - kRamBase;
    return size < kMaxRamSize ? size : kMaxRamSize;
}

}  // namespace vmm::layout
