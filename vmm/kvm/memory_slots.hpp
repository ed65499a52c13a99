// KVM memory slots for host memory other than guest RAM: the mmapped parts of assigned
// devices' BARs (api.rst 4.35 KVM_SET_USER_MEMORY_REGION; a size of 0 deletes a slot). Slots
// come from [first, KVM_CAP_NR_MEMSLOTS); guest RAM keeps the slots below `first`.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/pci/bar_windows.hpp"
#include "vmm/base/log.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

// Threads: map/unmap come from vCPU threads (BAR and command writes); a mutex guards the slots.
class MemorySlots final : public devices::pci::DirectMapper {
public:
    MemorySlots(const Vm& vm, std::uint32_t first);
    ~MemorySlots();
    MemorySlots(const MemorySlots&) = delete;
    MemorySlots& operator=(const MemorySlots&) = delete;

    std::optional<std::uint32_t> map(GuestRange range, void* host) override;
    void unmap(std::uint32_t slot) override;
    std::size_t used() const;

private:
    bool set(std::uint32_t slot, std::uint64_t guest, std::uint64_t size, void* host);

    const Vm& vm_;
    mutable std::mutex lock_;
    std::vector<std::uint32_t> free_;
    std::map<std::uint32_t, std::uint64_t> used_;  // slot -> guest base
    RateLimiter log_;
};

}  // namespace vmm::kvm
