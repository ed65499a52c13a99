// An edge-triggered interrupt a device raises (with KVM: an eventfd bound to a GIC SPI or an MSI
// route by KVM_IRQFD). Devices depend only on this, so they run without KVM in tests.
#pragma once

namespace vmm {

class InterruptLine {
public:
    virtual ~InterruptLine() = default;
    // Signals one interrupt edge. Safe to call from any thread.
    virtual void trigger() = 0;
};

}  // namespace vmm
