// ViommuConfig: what `lkvm run --viommu[=SPEC]` asked for, as plain data, with its parser (used by
// vmm/cli.cpp) and its checks (used by validate()). Syntax: which devices go
// behind it, then comma-separated options:
//
//   --viommu                      everything behind the vIOMMU with the defaults below
//   --viommu virtio[,OPTIONS]     only the emulated virtio-mmio devices
//   --viommu vfio[,OPTIONS]       only assigned PCI functions (--vfio-pci)
//   --viommu all[,OPTIONS]        both (the same as virtio,vfio)
//   --viommu OPTIONS              both, with options
//
//   OPTIONS (comma-separated):
//     page_size=4K|64K|MASK       page_size_mask (virtio 1.2 5.13.4). 4K: granule 4 KiB and every
//                                 larger power of two (Linux then maps big contiguous buffers in
//                                 one MAP); 64K likewise from 64 KiB; MASK a number (0x...), whose
//                                 lowest set bit is the granule. Default 4K. The granule must not
//                                 exceed the guest's page size (Linux refuses it), so at most 64K.
//     bypass=0|1                  boot value of config.bypass (5.13.4, CONFORMANCE.md D13): whether
//                                 endpoints DMA untranslated until the driver attaches them.
//                                 Default 1 (QEMU's boot-bypass default): guests without the driver
//                                 keep working. Restored on VM reset, kept over device reset (CONFORMANCE.md D6).
//     input_range=START-END       IOVA window the driver may map (inclusive END). Default 48 bits.
//     input_bits=N                the same as input_range=0-(2^N - 1), 12 <= N <= 64.
//     poll=US                     adaptive polling of the request queue: after a kick, a host
//                                 thread serves the driver's requests with its kicks suppressed
//                                 (no VM exit per MAP/UNMAP sync) until US microseconds pass
//                                 without a request; then kicks again. 0 = off (every request is
//                                 served by the kicking vCPU). The window adapts (halved when a
//                                 phase served nothing, off below US/4, back on when two kicks
//                                 come closer than US). Default 0 (kDefaultViommuPollUs).
//     tables=on|off               page-table handover (iommu/page_tables.md): also offer the
//                                 experimental LKVM_VIOMMU_F_ATTACH_TABLE, so a driver that knows it
//                                 hands over its own stage-1 tables instead of sending MAP/UNMAP.
//                                 Emulated devices only: refused with assigned PCI functions
//                                 behind the vIOMMU. Default off.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "iommu/types.hpp"

namespace vmm {

// Longest idle window of the request-queue poller (poll=US; the window adapts below it, see
// virtio/queue_poller.hpp). Off by default, by measurement: in the nested rig (guest-images/
// README.md, virtio-blk bench) the guest's gap between two MAP/UNMAP syncs is mostly longer than
// 200 us, and a spinning poller takes CPU the vCPU needs, so polling lost 15-30 % there. Worth
// trying (e.g. poll=50) where the host has a spare core per polling guest.
inline constexpr std::uint32_t kDefaultViommuPollUs = 0;
inline constexpr std::uint32_t kMaxViommuPollUs = 1'000'000;

struct ViommuConfig {
    bool virtio = true;        // emulated virtio-mmio devices are endpoints
    bool vfio = true;          // assigned PCI functions are endpoints (their RID is the endpoint ID)
    iommu::IovaWindow window;  // page_size and input_range / input_bits
    bool boot_bypass = true;
    std::uint32_t poll_us = kDefaultViommuPollUs;
    bool tables = false;  // offer page-table handover (tables=on)

    bool operator==(const ViommuConfig&) const = default;
};

// Parses a --viommu value ("" for the bare flag) into `out` (which starts from the defaults).
// Returns an error text naming the bad part, or empty.
std::string parse_viommu(std::string_view spec, ViommuConfig& out);

// Problems with a parsed configuration that the syntax cannot catch, one line each.
std::vector<std::string> check_viommu(const ViommuConfig& config);

// One line for --debug: "virtio+vfio, page_size_mask=0x..., bypass=1, input=0x0-0x...".
std::string describe(const ViommuConfig& config);

// Largest granule accepted: no arm64 guest has pages larger than 64 KiB, and Linux refuses a
// granule above its PAGE_SIZE (CONFORMANCE.md L2).
inline constexpr std::uint64_t kViommuMaxGranule = 64 * 1024;

}  // namespace vmm
