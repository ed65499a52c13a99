// Feature-bit helpers shared by the transport and the device models (virtio 1.2 section 2.2).
// The bit numbers themselves come from <linux/virtio_config.h> and the per-device UAPI headers.
#pragma once

#include <cstdint>

namespace virtio {

constexpr std::uint64_t feature_bit(unsigned bit) { return std::uint64_t{1} << bit; }
constexpr bool has_feature(std::uint64_t features, unsigned bit) { return (features & feature_bit(bit)) != 0; }

}  // namespace virtio
