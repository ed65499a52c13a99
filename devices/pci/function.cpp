#include "devices/pci/function.hpp"

#include <cstdio>

namespace devices::pci {

std::string Bdf::to_string() const {
    char text[16];
    std::snprintf(text, sizeof text, "%02x:%02x.%x", bus, device & 0x1f, function & 7);
    return text;
}

}  // namespace devices::pci
