// A 16550A-compatible UART on MMIO (byte registers, reg-shift 0): Linux's 8250 driver and
// earlycon ("uart8250"/stdout-path) drive it as ns16550a. TX goes straight to a host sink, so the
// transmitter is always empty; RX comes from the event loop. Register semantics: TI PC16550D
// datasheet (registers, IIR priorities, loopback).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>

#include "fdt/contributor.hpp"
#include "vmm/base/address.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/irq_level.hpp"
#include "vmm/base/log.hpp"

namespace devices {

// Where transmitted bytes go (stdout for lkvm). Called with the UART's lock held.
class SerialOutput {
public:
    virtual void write_bytes(std::span<const std::uint8_t> bytes) = 0;

protected:
    ~SerialOutput() = default;
};

// Called from vCPU threads (register accesses) and the event-loop thread (receive); one mutex
// guards all register state, and the interrupt level is updated under it so levels stay ordered.
class Uart16550 final : public vmm::MmioDevice, public fdt::Contributor {
public:
    // Bytes queued for the guest beyond the 16-byte FIFO the guest can see: typed or pasted
    // input waits here; past this, input is dropped (and counted).
    static constexpr std::size_t kRxCapacity = 4096;

    Uart16550(vmm::GuestRange window, std::uint32_t spi, std::uint32_t clock_hz, vmm::LevelInterruptLine& irq,
              SerialOutput& output);

    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    // Host input for the guest. Returns how many bytes were accepted (the rest are dropped).
    std::size_t receive(std::span<const std::uint8_t> bytes);
    std::size_t rx_dropped() const;

    void write_fdt(fdt::Writer& writer, const fdt::Context& context) const override;
    std::uint64_t fdt_address() const override { return window_.base().value; }

private:
    std::uint8_t read_register(unsigned reg);
    void write_register(unsigned reg, std::uint8_t value);
    std::uint8_t interrupt_identification() const;  // IIR without side effects
    void update_irq();
    void transmit(std::uint8_t byte);

    const vmm::GuestRange window_;
    const std::uint32_t spi_;
    const std::uint32_t clock_hz_;
    vmm::LevelInterruptLine& irq_;
    SerialOutput& output_;

    mutable std::mutex lock_;
    std::deque<std::uint8_t> rx_;
    std::uint8_t ier_ = 0;
    std::uint8_t lcr_ = 0x03;  // 8N1
    std::uint8_t mcr_ = 0;
    std::uint8_t lsr_errors_ = 0;  // OE, sticky until LSR is read
    std::uint8_t msr_deltas_ = 0;  // MSR bits 3:0, cleared by reading MSR
    std::uint8_t scr_ = 0;
    std::uint8_t dll_ = 0x0c;  // 9600 baud at 1.8432 MHz, the power-on value firmware expects
    std::uint8_t dlm_ = 0;
    bool fifo_enabled_ = false;
    bool thre_pending_ = false;  // THR-empty interrupt latched until IIR is read or THR written
    bool irq_asserted_ = false;
    std::size_t rx_dropped_ = 0;
    vmm::RateLimiter drop_log_;
};

}  // namespace devices
