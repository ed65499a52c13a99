// <linux/virtio_net.h> for C++: its struct virtio_net_ctrl_hdr has a field named `class`, a C++
// keyword, so the header is included with that one name renamed (nothing here uses the control
// queue). Include this instead of the kernel header directly.
#pragma once

#include <linux/if_ether.h>
#include <linux/types.h>
#include <linux/virtio_config.h>
#include <linux/virtio_types.h>

#define class class_
#include <linux/virtio_net.h>
#undef class
