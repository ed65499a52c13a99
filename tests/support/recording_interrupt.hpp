// Test double for vmm::InterruptLine: counts trigger() calls (edges) instead of raising an IRQ.
#pragma once

#include <atomic>

#include "vmm/base/interrupt.hpp"

namespace support {

class RecordingInterrupt final : public vmm::InterruptLine {
public:
    void trigger() override { count_.fetch_add(1, std::memory_order_relaxed); }
    unsigned count() const { return count_.load(std::memory_order_relaxed); }
    // The count so far, resetting it to zero (handy for "exactly one more interrupt" checks).
    unsigned take() { return count_.exchange(0, std::memory_order_relaxed); }

private:
    std::atomic<unsigned> count_{0};
};

}  // namespace support
