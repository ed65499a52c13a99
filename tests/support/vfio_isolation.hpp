// Shared by the randomized isolation tests of the vIOMMU <-> VFIO path
// (tests/devices/vfio/dma_isolation_test.cpp, shadow_isolation_test.cpp): two host IOMMU groups on
// the mock VFIO kernel with a container each, the DmaMapper over them, and the accounting check
// every step ends with.
#pragma once

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/vfio/dma_mapper.hpp"
#include "devices/vfio/group.hpp"
#include "iommu/iommu.hpp"
#include "tests/support/mock_vfio_host.hpp"

namespace support {

// Endpoints 8 and 9 share container 0 (one host group), 16 has container 1.
inline constexpr iommu::EndpointId kIsolationVfio[] = {8, 9, 16};
inline std::size_t isolation_container(iommu::EndpointId endpoint) { return endpoint == 16 ? 1 : 0; }

// Arms the mock host, at random, to fail one of its next `within` maps (one step in `map_odds`) and
// unmaps (one in `unmap_odds`) with a random errno; returns how many failures it armed.
template <class Pick>
int inject_host_failures(devices::vfio::testing::MockVfioHost& host, Pick& pick, std::uint64_t map_odds,
                         std::uint64_t unmap_odds, std::uint64_t within) {
    static constexpr int kErrors[] = {EIO, ENOMEM, ENOSPC, EFAULT, EINVAL};
    int armed = 0;
    if (pick(map_odds) == 0) {
        host.fail_map_after(pick(within), kErrors[pick(5)]);
        ++armed;
    }
    if (pick(unmap_odds) == 0) {
        host.fail_unmap_after(pick(within), kErrors[pick(5)]);
        ++armed;
    }
    return armed;
}

struct IsolationHost {
    devices::vfio::testing::MockVfioHost host;
    std::vector<std::shared_ptr<devices::vfio::Container>> containers;
    std::vector<std::shared_ptr<devices::vfio::Group>> groups;
    std::shared_ptr<devices::vfio::DmaMapper> mapper;

    IsolationHost(const vmm::GuestMemory& memory, std::uint32_t entry_limit,
                  std::optional<std::uint64_t> memlock = std::nullopt) {
        host.add_device("0000:00:01.0", 1);
        host.add_device("0000:00:02.0", 2);
        host.set_dma_limit(entry_limit);
        host.set_memlock_budget(memlock);
        for (unsigned g = 1; g <= 2; ++g) {
            containers.push_back(std::make_shared<devices::vfio::Container>(host, "container " + std::to_string(g)));
            groups.push_back(std::make_shared<devices::vfio::Group>(host, g, containers.back()));
        }
        mapper = std::make_shared<devices::vfio::DmaMapper>(memory, host);
    }
    // The VFIO endpoints join the mapper and, with it as their listener, `model`.
    void add_endpoints(iommu::Iommu& model) {
        for (iommu::EndpointId ep : kIsolationVfio) {
            mapper->add_endpoint(ep, containers.at(isolation_container(ep)));
            model.add_endpoint({ep, {}, mapper});
        }
    }
    // What container `c` holds now.
    std::vector<devices::vfio::testing::MockDma> entries(std::size_t c) const {
        const auto dma = host.dma();
        auto it = dma.find(containers.at(c)->fd());
        return it == dma.end() ? std::vector<devices::vfio::testing::MockDma>{} : it->second;
    }
    // The mapper's accounting is the host's, entry for entry, and no container may be stale.
    void check_accounting() const {
        std::uint64_t counted = 0;
        for (const auto& s : mapper->stats().spaces) {
            counted += s.host_mappings;
            CHECK(s.stale == 0);
        }
        REQUIRE(counted == host.dma_entries());
    }
};

// Steps per seed: LKVM_ISOLATION_STEPS=N, or `fallback` (the short default of `make unit`).
inline std::uint64_t isolation_steps(std::uint64_t fallback) {
    if (const char* text = std::getenv("LKVM_ISOLATION_STEPS")) return std::strtoull(text, nullptr, 10);
    return fallback;
}

}  // namespace support
