// A level-sensitive interrupt a device drives (the UART). With KVM it is a GIC SPI driven by
// KVM_IRQ_LINE (vmm::kvm::SpiLevelLine); tests record the level. Edge interrupts (virtio) use
// vmm::InterruptLine instead.
#pragma once

namespace vmm {

class LevelInterruptLine {
public:
    virtual ~LevelInterruptLine() = default;
    // Drives the line to `asserted`. Callers only call on changes; safe from any thread.
    virtual void set_level(bool asserted) = 0;
};

}  // namespace vmm
