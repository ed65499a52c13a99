#include "vmm/kvm/memory_slots.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>

namespace vmm::kvm {

MemorySlots::MemorySlots(const Vm& vm, std::uint32_t first) : vm_(vm) {
    int total = vm.check_extension(KVM_CAP_NR_MEMSLOTS);
    if (total <= 0) total = 32;  // the architectural minimum KVM has always offered
    for (std::uint32_t slot = static_cast<std::uint32_t>(total); slot-- > first;) free_.push_back(slot);
}

MemorySlots::~MemorySlots() {
    std::lock_guard guard(lock_);
    for (const auto& [slot, base] : used_) set(slot, base, 0, nullptr);
}

bool MemorySlots::set(std::uint32_t slot, std::uint64_t guest, std::uint64_t size, void* host) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = guest;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    if (::ioctl(vm_.fd(), KVM_SET_USER_MEMORY_REGION, &region) == 0) return true;
    std::uint64_t dropped = 0;
    if (log_.allow(&dropped))
        log_warn("KVM_SET_USER_MEMORY_REGION slot %u at 0x%" PRIx64 " (%" PRIu64 " KiB): %s", slot, guest, size >> 10,
                 std::strerror(errno));
    return false;
}

std::optional<std::uint32_t> MemorySlots::map(GuestRange range, void* host) {
    std::lock_guard guard(lock_);
    if (free_.empty()) {
        guest_error(log_, "out of KVM memory slots for BARs; the BAR is trapped instead");
        return std::nullopt;
    }
    const std::uint32_t slot = free_.back();
    if (!set(slot, range.base().value, range.size(), host)) return std::nullopt;
    free_.pop_back();
    used_[slot] = range.base().value;
    return slot;
}

void MemorySlots::unmap(std::uint32_t slot) {
    std::lock_guard guard(lock_);
    auto it = used_.find(slot);
    if (it == used_.end()) return;
    set(slot, it->second, 0, nullptr);
    used_.erase(it);
    free_.push_back(slot);
}

std::size_t MemorySlots::used() const {
    std::lock_guard guard(lock_);
    return used_.size();
}

}  // namespace vmm::kvm
