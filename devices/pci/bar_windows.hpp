// devices::pci::BarWindows: the host bridge's MMIO windows (the `ranges` of its DT node) and
// what the guest's BAR programming puts in them: trapped pieces (MMIO exits dispatched to a
// device) and direct pieces (host memory given to the guest, with KVM a memory slot).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "vmm/base/address.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/log.hpp"

namespace devices::pci {

// Gives host memory to the guest at a guest-physical range (KVM_SET_USER_MEMORY_REGION).
// Called with a function's lock held, from vCPU threads (BAR and command writes) or the building
// thread. Leaf interface; vmm/kvm/memory_slots.hpp implements it.
class DirectMapper {
public:
    // `range` and `host` are host-page aligned. Returns a handle, or nothing if refused.
    virtual std::optional<std::uint32_t> map(vmm::GuestRange range, void* host) = 0;
    virtual void unmap(std::uint32_t handle) = 0;

protected:
    ~DirectMapper() = default;
};

// What a function places its BARs through. Every piece must lie inside one window and must not
// overlap any other piece, so a hostile guest can neither cover RAM or the GIC with a BAR nor
// make two BARs alias. Refusals are answered by leaving the piece unmapped (RAZ/WI).
class BarSpace {
public:
    // Guest accesses to `range` go to `device` with offsets relative to range.base().
    virtual bool add_trap(vmm::GuestRange range, vmm::MmioDevice& device) = 0;
    virtual std::optional<std::uint32_t> add_direct(vmm::GuestRange range, void* host) = 0;
    virtual void remove_trap(vmm::MmioDevice& device) = 0;
    virtual void remove_direct(std::uint32_t handle) = 0;

protected:
    ~BarSpace() = default;
};

// Threads: add/remove come from vCPU threads under a function's lock; window accesses come from
// vCPU threads through the MmioBus. One shared_mutex guards the piece table; a trapped access
// looks its piece up under the shared lock and calls the device after releasing it, so a device
// may add or remove pieces from inside its own handlers without deadlock (trap devices live as
// long as their function, which outlives the windows' users).
class BarWindows final : public BarSpace {
public:
    // `windows` are registered on the bus by the machine through window(i). `direct` may be null
    // (then every piece is trapped).
    BarWindows(std::vector<vmm::GuestRange> windows, DirectMapper* direct);
    BarWindows(const BarWindows&) = delete;
    BarWindows& operator=(const BarWindows&) = delete;

    std::size_t window_count() const { return windows_.size(); }
    vmm::GuestRange window_range(std::size_t index) const { return windows_.at(index)->range; }
    // The MmioDevice to register on the bus at window_range(index).
    vmm::MmioDevice& window(std::size_t index) { return *windows_.at(index); }

    bool add_trap(vmm::GuestRange range, vmm::MmioDevice& device) override;
    std::optional<std::uint32_t> add_direct(vmm::GuestRange range, void* host) override;
    void remove_trap(vmm::MmioDevice& device) override;
    void remove_direct(std::uint32_t handle) override;

    std::size_t trap_count() const;
    std::size_t direct_count() const;

private:
    struct Window final : vmm::MmioDevice {
        Window(BarWindows& owner, vmm::GuestRange r) : windows(owner), range(r) {}
        void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override;
        void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
        BarWindows& windows;
        vmm::GuestRange range;
    };
    struct Piece {
        vmm::GuestRange range;
        vmm::MmioDevice* trap = nullptr;  // null: direct
        std::uint32_t handle = 0;         // direct only
    };
    bool fits(vmm::GuestRange range) const;  // lock held
    // The trap device for [addr, addr + size) and the offset in it, or null.
    vmm::MmioDevice* find_trap(std::uint64_t addr, std::size_t size, std::uint64_t& offset) const;

    std::vector<std::unique_ptr<Window>> windows_;
    DirectMapper* direct_;
    mutable std::shared_mutex lock_;
    std::vector<Piece> pieces_;
    vmm::RateLimiter log_;
};

}  // namespace devices::pci
