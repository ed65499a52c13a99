// virtio::ActiveQueues: the per-driver state every device model keeps from DRIVER_OK until reset.
#include "virtio/active_queues.hpp"

#include <doctest/doctest.h>

#include <array>

#include "tests/support/fake_driver.hpp"
#include "virtio/queue.hpp"

namespace {

struct NoContext final : virtio::DeviceContext {
    void signal_used(std::uint16_t) override {}
    void signal_config_change() override {}
    void set_needs_reset() override {}
};

struct Setup {
    support::FakeGuestRam ram;
    vmm::DmaMemory dma{ram.memory()};
    NoContext context;
    std::unique_ptr<virtio::Virtqueue> queue = make_queue();

    std::unique_ptr<virtio::Virtqueue> make_queue() {
        const virtio::QueueLayout layout{8, vmm::Iova{ram.alloc(16 * 8)}, vmm::Iova{ram.alloc(6 + 2 * 8)},
                                         vmm::Iova{ram.alloc(6 + 8 * 8, 4)}};
        return virtio::Virtqueue::create(layout, 8, dma, 0);
    }
};

}  // namespace

TEST_CASE("ActiveQueues keeps an activation only when the required queues are enabled, and drops it on reset") {
    Setup s;
    REQUIRE(s.queue);
    std::array<virtio::Virtqueue*, 2> queues{nullptr, s.queue.get()};  // queue 0 disabled
    const virtio::Activation activation{0x30, queues, s.context, s.dma};
    virtio::ActiveQueues active;
    CHECK_FALSE(active.active());

    CHECK_FALSE(active.activate(activation, {0, 1}));
    CHECK_FALSE(active.active());
    CHECK(active.queue(1) == nullptr);
    CHECK_FALSE(active.activate(activation, {2}));  // beyond the device's queues
    CHECK_FALSE(active.active());

    REQUIRE(active.activate(activation, {1}));
    CHECK(active.active());
    CHECK(active.features() == 0x30);
    CHECK(active.queue(0) == nullptr);
    CHECK(active.queue(1) == s.queue.get());
    CHECK(active.queue(2) == nullptr);
    CHECK(&active.context() == &s.context);
    CHECK(&active.memory() == &s.dma);

    active.reset();
    CHECK_FALSE(active.active());
    CHECK(active.features() == 0);
    CHECK(active.queue(1) == nullptr);
}
