// Interrupt and doorbell plumbing between devices and KVM: an irqfd-backed edge InterruptLine,
// a KVM_IRQ_LINE-backed level line, and ioeventfds for doorbell registers. api.rst 4.75
// (KVM_IRQFD), 4.59 (KVM_IOEVENTFD), 4.25 (KVM_IRQ_LINE, arm64 SPI encoding).
#pragma once

#include <cstdint>
#include <optional>

#include "vmm/base/address.hpp"
#include "vmm/base/interrupt.hpp"
#include "vmm/base/irq_level.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

// An edge on GIC SPI `spi`: trigger() writes an eventfd that KVM turns into an interrupt without
// leaving the kernel (KVM's default routing maps GSI n to SPI n). Safe from any thread.
class IrqfdLine final : public vmm::InterruptLine {
public:
    IrqfdLine(const Vm& vm, std::uint32_t spi);
    ~IrqfdLine() override;
    IrqfdLine(const IrqfdLine&) = delete;
    IrqfdLine& operator=(const IrqfdLine&) = delete;

    void trigger() override;

private:
    const Vm& vm_;
    std::uint32_t spi_;
    UniqueFd event_;
};

// The UART's level interrupt: KVM_IRQ_LINE raises or lowers the SPI. Chosen over an irqfd with
// a resample fd because the UART knows exactly when its level changes (every change happens in a
// register access or input delivery, under its lock), so no resample round trip is needed.
class SpiLevelLine final : public vmm::LevelInterruptLine {
public:
    SpiLevelLine(const Vm& vm, std::uint32_t spi) : vm_(vm), spi_(spi) {}
    void set_level(bool asserted) override { vm_.set_irq_line(spi_, asserted); }

private:
    const Vm& vm_;
    std::uint32_t spi_;
};

// A guest write of `length` bytes at `addr` (matching `datamatch`, if given) becomes an eventfd
// signal instead of an MMIO exit; the event loop reads fd().
class IoEventFd {
public:
    IoEventFd(const Vm& vm, GuestPhysAddr addr, std::uint32_t length, std::optional<std::uint64_t> datamatch);
    ~IoEventFd();
    IoEventFd(const IoEventFd&) = delete;
    IoEventFd& operator=(const IoEventFd&) = delete;

    int fd() const { return event_.get(); }
    // Clears the eventfd; true if it had been signalled.
    bool consume() const;
    // Signals it from the host side, as a guest kick would: the owner's handler runs again on a
    // later round of the event loop (a queue whose pass ran out of budget).
    void ring() const;

private:
    const Vm& vm_;
    GuestPhysAddr addr_;
    std::uint32_t length_;
    std::optional<std::uint64_t> datamatch_;
    UniqueFd event_;
};

}  // namespace vmm::kvm
