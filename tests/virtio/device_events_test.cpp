// virtio::DeviceEvents over a real EventLoop and transport: doorbells reach the device, the fds
// the device watches are served under the transport lock, and after each event the device may
// change what it watches and ask for another pass.
#include "virtio/device_events.hpp"

#include <doctest/doctest.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <functional>

#include "tests/support/fake_driver.hpp"
#include "vmm/base/unique_fd.hpp"

namespace {

void signal(int fd) {
    const std::uint64_t one = 1;
    REQUIRE(::write(fd, &one, sizeof one) == sizeof one);
}

bool consume(int fd) {
    std::uint64_t value = 0;
    return ::read(fd, &value, sizeof value) == sizeof value;
}

// A device with one queue that, when `source` >= 0, watches it from its first update on.
class EventDevice final : public virtio::Device {
public:
    int source = -1;
    unsigned kicks = 0, ready = 0, updates = 0;
    bool pass_wanted = false;        // asked once, at the next update
    std::function<void()> on_event;  // after a kick or a ready source (a test stops the loop)

    std::string_view name() const override { return "events"; }
    std::uint32_t device_id() const override { return 0x4c45; }
    std::uint64_t device_features() const override { return 0; }
    std::uint16_t queue_count() const override { return 1; }
    std::uint16_t queue_max_size(std::uint16_t) const override { return 16; }
    std::uint32_t config_size() const override { return 0; }
    void read_config(std::uint32_t, std::span<std::uint8_t>) const override {}
    bool activate(const virtio::Activation&) override { return true; }
    void reset() override {}
    void notify(std::uint16_t) override {
        ++kicks;
        if (on_event) on_event();
    }
    void update_events(virtio::EventHost& host) override {
        if (updates++ == 0 && source >= 0)
            host.watch(source, "events source", [this] {
                consume(source);
                ++ready;
                if (on_event) on_event();
            });
        if (pass_wanted) host.request_pass(0);
        pass_wanted = false;
    }
};

struct Rig {
    vmm::EventLoop loop;
    vmm::UniqueFd doorbell{::eventfd(0, EFD_NONBLOCK)};
    vmm::UniqueFd source{::eventfd(0, EFD_NONBLOCK)};
    EventDevice* device;
    support::FakeDriver driver;

    explicit Rig(bool with_source) : device(new EventDevice), driver(std::unique_ptr<virtio::Device>(device)) {
        if (with_source) device->source = source.get();
    }
    std::vector<virtio::Doorbell> doorbells() {
        const int fd = doorbell.get();
        return {{fd, [fd] { return consume(fd); }, [fd] { signal(fd); }}};
    }
};

}  // namespace

TEST_CASE("DeviceEvents: a device's own fd is served under its lock, then the device updates") {
    Rig rig(true);
    REQUIRE(rig.driver.start());
    {
        virtio::DeviceEvents events(rig.loop, rig.driver.transport(), rig.doorbells());
        CHECK(rig.device->updates == 1);
        rig.device->on_event = [&] { rig.loop.stop(); };
        signal(rig.source.get());
        rig.loop.run();
        CHECK(rig.device->ready == 1);
        CHECK(rig.device->updates == 2);
        CHECK(rig.device->kicks == 0);
    }
    // Every fd DeviceEvents added is gone from the loop: adding them again works.
    rig.loop.add(rig.doorbell.get(), "again", [] {});
    rig.loop.add(rig.source.get(), "again", [] {});
}

TEST_CASE("DeviceEvents: a kick runs the queue; a pass the device asks for rings the doorbell again") {
    Rig rig(true);
    REQUIRE(rig.driver.start());
    virtio::DeviceEvents events(rig.loop, rig.driver.transport(), rig.doorbells());
    rig.device->pass_wanted = true;
    rig.device->on_event = [&] {
        if (rig.device->kicks == 2) rig.loop.stop();
    };
    signal(rig.doorbell.get());
    rig.loop.run();
    CHECK(rig.device->kicks == 2);
    CHECK(rig.device->updates == 3);  // the first, then one per kick
    CHECK_FALSE(consume(rig.doorbell.get()));
}

TEST_CASE("DeviceEvents: a device that watches nothing is not asked to update again") {
    Rig rig(false);
    REQUIRE(rig.driver.start());
    virtio::DeviceEvents events(rig.loop, rig.driver.transport(), rig.doorbells());
    rig.device->pass_wanted = true;  // never asked: no update after the first
    rig.device->on_event = [&] { rig.loop.stop(); };
    signal(rig.doorbell.get());
    rig.loop.run();
    CHECK(rig.device->kicks == 1);
    CHECK(rig.device->updates == 1);
}
