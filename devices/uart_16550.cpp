#include "devices/uart_16550.hpp"

#include <linux/serial_reg.h>

namespace devices {
namespace {

constexpr unsigned kRegisterCount = 8;
// IIR bits 7:6 read 11 while the FIFOs are enabled (16550A); the uapi header has no name for it.
constexpr std::uint8_t kIirFifosEnabled = 0xc0;
// Modem lines when not in loopback: a terminal is attached (carrier, DSR and CTS asserted).
constexpr std::uint8_t kMsrConnected = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;

// In loopback the modem outputs feed the modem inputs: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
std::uint8_t loopback_msr(std::uint8_t mcr) {
    std::uint8_t msr = 0;
    if (mcr & UART_MCR_RTS) msr |= UART_MSR_CTS;
    if (mcr & UART_MCR_DTR) msr |= UART_MSR_DSR;
    if (mcr & UART_MCR_OUT1) msr |= UART_MSR_RI;
    if (mcr & UART_MCR_OUT2) msr |= UART_MSR_DCD;
    return msr;
}

}  // namespace

Uart16550::Uart16550(vmm::GuestRange window, std::uint32_t spi, std::uint32_t clock_hz, vmm::LevelInterruptLine& irq,
                     SerialOutput& output)
    : window_(window), spi_(spi), clock_hz_(clock_hz), irq_(irq), output_(output) {}

void Uart16550::mmio_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    for (auto& b : data) b = 0;
    if (offset >= kRegisterCount || data.empty()) return;
    std::lock_guard guard(lock_);
    // Registers are bytes; a wider access returns the addressed register in its low byte.
    data[0] = read_register(static_cast<unsigned>(offset));
    update_irq();
}

void Uart16550::mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    if (offset >= kRegisterCount || data.empty()) return;
    std::lock_guard guard(lock_);
    write_register(static_cast<unsigned>(offset), data[0]);
    update_irq();
}

std::uint8_t Uart16550::interrupt_identification() const {
    std::uint8_t fifo = fifo_enabled_ ? kIirFifosEnabled : 0;
    // Highest priority first (PC16550D table 4).
    if ((ier_ & UART_IER_RLSI) && lsr_errors_) return fifo | UART_IIR_RLSI;
    if ((ier_ & UART_IER_RDI) && !rx_.empty()) return fifo | UART_IIR_RDI;
    if ((ier_ & UART_IER_THRI) && thre_pending_) return fifo | UART_IIR_THRI;
    if ((ier_ & UART_IER_MSI) && msr_deltas_) return fifo | UART_IIR_MSI;
    return fifo | UART_IIR_NO_INT;
}

std::uint8_t Uart16550::read_register(unsigned reg) {
    const bool dlab = lcr_ & UART_LCR_DLAB;
    switch (reg) {
        case UART_RX: {
            if (dlab) return dll_;
            if (rx_.empty()) return 0;
            std::uint8_t byte = rx_.front();
            rx_.pop_front();
            return byte;
        }
        case UART_IER: return dlab ? dlm_ : ier_;
        case UART_IIR: {
            std::uint8_t iir = interrupt_identification();
            // Reading IIR while it reports THR-empty acknowledges that interrupt.
            if ((iir & UART_IIR_ID) == UART_IIR_THRI && !(iir & UART_IIR_NO_INT)) thre_pending_ = false;
            return iir;
        }
        case UART_LCR: return lcr_;
        case UART_MCR: return mcr_;
        case UART_LSR: {
            // The transmitter is always empty: bytes leave for the host as they are written.
            std::uint8_t lsr = UART_LSR_THRE | UART_LSR_TEMT | lsr_errors_;
            if (!rx_.empty()) lsr |= UART_LSR_DR;
            lsr_errors_ = 0;
            return lsr;
        }
        case UART_MSR: {
            std::uint8_t lines = (mcr_ & UART_MCR_LOOP) ? loopback_msr(mcr_) : kMsrConnected;
            std::uint8_t msr = lines | msr_deltas_;
            msr_deltas_ = 0;
            return msr;
        }
        case UART_SCR: return scr_;
        default: return 0;
    }
}

void Uart16550::write_register(unsigned reg, std::uint8_t value) {
    const bool dlab = lcr_ & UART_LCR_DLAB;
    switch (reg) {
        case UART_TX:
            if (dlab) {
                dll_ = value;
            } else {
                transmit(value);
                thre_pending_ = true;  // the byte left at once: THR is empty again
            }
            break;
        case UART_IER:
            if (dlab) {
                dlm_ = value;
            } else {
                // Enabling the THR-empty interrupt while THR is empty raises it (drivers rely on
                // this to start transmitting).
                if ((value & UART_IER_THRI) && !(ier_ & UART_IER_THRI)) thre_pending_ = true;
                ier_ = value & 0x0f;
            }
            break;
        case UART_FCR:
            fifo_enabled_ = value & UART_FCR_ENABLE_FIFO;
            if (value & UART_FCR_CLEAR_RCVR) rx_.clear();
            break;
        case UART_LCR: lcr_ = value; break;
        case UART_MCR: {
            std::uint8_t before = (mcr_ & UART_MCR_LOOP) ? loopback_msr(mcr_) : kMsrConnected;
            mcr_ = value & 0x1f;
            std::uint8_t after = (mcr_ & UART_MCR_LOOP) ? loopback_msr(mcr_) : kMsrConnected;
            std::uint8_t changed = before ^ after;
            if (changed & UART_MSR_CTS) msr_deltas_ |= UART_MSR_DCTS;
            if (changed & UART_MSR_DSR) msr_deltas_ |= UART_MSR_DDSR;
            if (changed & UART_MSR_DCD) msr_deltas_ |= UART_MSR_DDCD;
            if ((before & UART_MSR_RI) && !(after & UART_MSR_RI)) msr_deltas_ |= UART_MSR_TERI;
            break;
        }
        case UART_SCR: scr_ = value; break;
        default: break;  // LSR and MSR are read-only
    }
}

void Uart16550::transmit(std::uint8_t byte) {
    if (mcr_ & UART_MCR_LOOP) {
        if (rx_.size() < kRxCapacity) rx_.push_back(byte);
        else lsr_errors_ |= UART_LSR_OE;
        return;
    }
    output_.write_bytes(std::span<const std::uint8_t>(&byte, 1));
}

std::size_t Uart16550::receive(std::span<const std::uint8_t> bytes) {
    std::lock_guard guard(lock_);
    std::size_t accepted = 0;
    // In loopback the receiver is disconnected from the outside world.
    if (!(mcr_ & UART_MCR_LOOP)) {
        for (std::uint8_t b : bytes) {
            if (rx_.size() >= kRxCapacity) break;
            rx_.push_back(b);
            ++accepted;
        }
    }
    if (accepted < bytes.size()) {
        rx_dropped_ += bytes.size() - accepted;
        lsr_errors_ |= UART_LSR_OE;
        if (drop_log_.allow())
            vmm::log_warn("uart: guest is not reading its console; dropped %zu input bytes", bytes.size() - accepted);
    }
    update_irq();
    return accepted;
}

std::size_t Uart16550::rx_dropped() const {
    std::lock_guard guard(lock_);
    return rx_dropped_;
}

void Uart16550::update_irq() {
    bool asserted = !(interrupt_identification() & UART_IIR_NO_INT);
    // OUT2 gates the interrupt output on PC-style boards; Linux's 8250 sets it, but earlycon and
    // other OSes may not, and a memory-mapped 16550 has no such gate, so it is ignored here.
    if (asserted != irq_asserted_) {
        irq_asserted_ = asserted;
        irq_.set_level(asserted);
    }
}

void Uart16550::write_fdt(fdt::Writer& w, const fdt::Context& context) const {
    auto node = w.node("serial", window_.base().value);
    w.property_string("compatible", "ns16550a");
    w.property_reg({window_});
    context.interrupts(w, {fdt::Interrupt::spi(spi_, fdt::Interrupt::Trigger::LevelHigh)});
    w.property_u32("clock-frequency", clock_hz_);
}

}  // namespace devices
