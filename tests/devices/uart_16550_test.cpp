#include "devices/uart_16550.hpp"

#include <doctest/doctest.h>
#include <linux/serial_reg.h>

#include <string>
#include <vector>

namespace {

struct RecordingLevel final : vmm::LevelInterruptLine {
    bool level = false;
    int changes = 0;
    void set_level(bool asserted) override {
        level = asserted;
        ++changes;
    }
};

struct RecordingOutput final : devices::SerialOutput {
    std::string text;
    void write_bytes(std::span<const std::uint8_t> bytes) override { text.append(bytes.begin(), bytes.end()); }
};

struct Fixture {
    RecordingLevel irq;
    RecordingOutput out;
    devices::Uart16550 uart{*vmm::GuestRange::make(vmm::GuestPhysAddr{0x1000000}, 8), 4, 1843200, irq, out};

    std::uint8_t read(unsigned reg) {
        std::uint8_t b = 0xee;
        uart.mmio_read(reg, std::span<std::uint8_t>(&b, 1));
        return b;
    }
    void write(unsigned reg, std::uint8_t value) { uart.mmio_write(reg, std::span<const std::uint8_t>(&value, 1)); }
    void receive(const std::string& s) {
        uart.receive(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
    }
};

}  // namespace

TEST_CASE("Uart16550 sends THR writes to the output and always reports an empty transmitter") {
    Fixture f;
    for (char c : std::string("hi\n")) f.write(UART_TX, static_cast<std::uint8_t>(c));
    CHECK(f.out.text == "hi\n");
    CHECK((f.read(UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT)) == (UART_LSR_THRE | UART_LSR_TEMT));
}

TEST_CASE("Uart16550 delivers received bytes through RBR with data-ready and an RX interrupt") {
    Fixture f;
    f.receive("ab");
    CHECK_FALSE(f.irq.level);  // receive interrupt not enabled yet
    CHECK((f.read(UART_LSR) & UART_LSR_DR) != 0);
    f.write(UART_IER, UART_IER_RDI);
    CHECK(f.irq.level);
    CHECK((f.read(UART_IIR) & UART_IIR_ID) == UART_IIR_RDI);
    CHECK(f.read(UART_RX) == 'a');
    CHECK(f.irq.level);
    CHECK(f.read(UART_RX) == 'b');
    CHECK_FALSE(f.irq.level);
    CHECK((f.read(UART_LSR) & UART_LSR_DR) == 0);
    CHECK((f.read(UART_IIR) & UART_IIR_NO_INT) != 0);
}

TEST_CASE("Uart16550 raises THR-empty when it is enabled and clears it when IIR is read") {
    Fixture f;
    f.write(UART_IER, UART_IER_THRI);
    CHECK(f.irq.level);
    CHECK((f.read(UART_IIR) & UART_IIR_ID) == UART_IIR_THRI);
    CHECK_FALSE(f.irq.level);
    f.write(UART_TX, 'x');  // transmitted at once: THR empty again
    CHECK(f.irq.level);
    f.write(UART_IER, 0);
    CHECK_FALSE(f.irq.level);
}

TEST_CASE("Uart16550 prioritises receive data over THR-empty") {
    Fixture f;
    f.write(UART_IER, UART_IER_THRI | UART_IER_RDI);
    f.receive("z");
    CHECK((f.read(UART_IIR) & UART_IIR_ID) == UART_IIR_RDI);
    f.read(UART_RX);
    CHECK((f.read(UART_IIR) & UART_IIR_ID) == UART_IIR_THRI);
}

TEST_CASE("Uart16550 exposes the divisor latch while DLAB is set") {
    Fixture f;
    f.write(UART_LCR, UART_LCR_DLAB | 0x03);
    f.write(UART_DLL, 0x01);
    f.write(UART_DLM, 0x02);
    CHECK(f.read(UART_DLL) == 0x01);
    CHECK(f.read(UART_DLM) == 0x02);
    CHECK(f.out.text.empty());  // DLL writes are not transmitted
    f.write(UART_LCR, 0x03);
    CHECK(f.read(UART_IER) == 0);
    CHECK(f.read(UART_LCR) == 0x03);
}

TEST_CASE("Uart16550 keeps the scratch register and reports FIFOs in IIR once enabled") {
    Fixture f;
    f.write(UART_SCR, 0x5a);
    CHECK(f.read(UART_SCR) == 0x5a);
    CHECK((f.read(UART_IIR) & 0xc0) == 0);
    f.write(UART_FCR, UART_FCR_ENABLE_FIFO);
    CHECK((f.read(UART_IIR) & 0xc0) == 0xc0);
}

TEST_CASE("Uart16550 loops transmitted bytes back and mirrors modem lines in loopback mode") {
    Fixture f;
    f.write(UART_MCR, UART_MCR_LOOP | UART_MCR_RTS | UART_MCR_OUT2);
    std::uint8_t msr = f.read(UART_MSR);
    CHECK((msr & UART_MSR_CTS) != 0);
    CHECK((msr & UART_MSR_DCD) != 0);
    CHECK((msr & UART_MSR_DSR) == 0);
    f.write(UART_TX, 'q');
    CHECK(f.out.text.empty());
    CHECK(f.read(UART_RX) == 'q');
    f.write(UART_MCR, 0);
    CHECK((f.read(UART_MSR) & (UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS)) ==
          (UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS));
}

TEST_CASE("Uart16550 drops input beyond its buffer and reports an overrun") {
    Fixture f;
    std::string flood(devices::Uart16550::kRxCapacity + 10, 'x');
    f.receive(flood);
    CHECK(f.uart.rx_dropped() == 10);
    CHECK((f.read(UART_LSR) & UART_LSR_OE) != 0);
    CHECK((f.read(UART_LSR) & UART_LSR_OE) == 0);  // cleared by reading LSR
}

TEST_CASE("Uart16550 ignores accesses outside its eight registers and answers wide reads in the low byte") {
    Fixture f;
    std::uint8_t wide[4] = {1, 2, 3, 4};
    f.write(UART_SCR, 0x77);
    f.uart.mmio_read(UART_SCR, wide);
    CHECK(wide[0] == 0x77);
    CHECK(wide[1] == 0);
    std::uint8_t b = 0xee;
    f.uart.mmio_read(8, std::span<std::uint8_t>(&b, 1));
    CHECK(b == 0);
    f.uart.mmio_write(100, std::span<const std::uint8_t>(&b, 1));
    CHECK(f.out.text.empty());
}

TEST_CASE("Uart16550 only touches the interrupt line when the level changes") {
    Fixture f;
    f.write(UART_IER, UART_IER_RDI);
    f.receive("a");
    f.receive("b");
    CHECK(f.irq.changes == 1);
}
