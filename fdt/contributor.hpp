// The seam between a device and the device tree: each device writes its own node through
// fdt::Contributor, and gets phandles and the interrupt-specifier format from the Context, so no
// device knows the GIC's cell layout. Bindings: interrupt-controller/arm,gic-v3.yaml.
#pragma once

#include <cstdint>
#include <span>

#include "fdt/writer.hpp"
#include "vmm/base/address.hpp"

namespace fdt {

// Every phandle in lkvm's trees. Fixed values keep the DTB reproducible.
enum class Phandle : std::uint32_t { Gic = 1, Its = 2, Iommu = 3 };

constexpr std::uint32_t phandle_value(Phandle p) { return static_cast<std::uint32_t>(p); }

// An interrupt as a device describes it; the Context turns it into GIC specifier cells.
struct Interrupt {
    enum class Kind : std::uint32_t { Spi = 0, Ppi = 1 };  // GIC_SPI / GIC_PPI cell values
    // IRQ_TYPE_* values of dt-bindings/interrupt-controller/irq.h.
    enum class Trigger : std::uint32_t { EdgeRising = 1, LevelHigh = 4 };
    Kind kind;
    std::uint32_t number;  // SPI number (INTID - 32) or PPI number (INTID - 16)
    Trigger trigger;

    static constexpr Interrupt spi(std::uint32_t n, Trigger t) { return {Kind::Spi, n, t}; }
    static constexpr Interrupt ppi(std::uint32_t n, Trigger t) { return {Kind::Ppi, n, t}; }
};

class Context {
public:
    // Writes `interrupts = <...>` for the GICv3 (#interrupt-cells = <3>: kind, number, flags).
    void interrupts(Writer& writer, std::span<const Interrupt> list) const;
    void interrupts(Writer& writer, std::initializer_list<Interrupt> list) const {
        interrupts(writer, std::span<const Interrupt>(list.begin(), list.size()));
    }
    std::uint32_t phandle(Phandle p) const { return phandle_value(p); }
};

// A device that describes itself in the device tree. Nodes are emitted in ascending `fdt_address`
// order, which makes the tree stable and easy to read.
class Contributor {
public:
    virtual void write_fdt(Writer& writer, const Context& context) const = 0;
    virtual std::uint64_t fdt_address() const = 0;

protected:
    ~Contributor() = default;
};

}  // namespace fdt
