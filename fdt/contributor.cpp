#include "fdt/contributor.hpp"

#include <vector>

namespace fdt {

void Context::interrupts(Writer& writer, std::span<const Interrupt> list) const {
    std::vector<std::uint32_t> cells;
    for (const Interrupt& irq : list)
        cells.insert(cells.end(),
                     {static_cast<std::uint32_t>(irq.kind), irq.number, static_cast<std::uint32_t>(irq.trigger)});
    writer.property_u32s("interrupts", cells);
}

}  // namespace fdt
