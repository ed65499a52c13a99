// The split-ring layout from <linux/virtio_ring.h> (virtio 1.2 section 2.7), without its legacy
// helpers: vring_init() converts void* implicitly, which is valid C but not C++.
#pragma once

#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/virtio_ring.h>
