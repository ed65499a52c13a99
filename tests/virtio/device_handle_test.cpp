// virtio::DeviceHandle: the typed reference the Machine hands to the control channel and keeps for
// its console. Unset handles are false; with() reaches the concrete model under the transport lock,
// and what the model changes is seen through the transport like any host-side event.
#include "virtio/device_handle.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_console.h>

#include <cstddef>

#include "tests/support/fake_driver.hpp"
#include "virtio/console.hpp"

namespace {

struct NullSink final : virtio::ConsoleSink {
    void write(std::span<const std::uint8_t>) override {}
};

}  // namespace

TEST_CASE("DeviceHandle: unset is false; set, with() calls the model's own methods through its transport") {
    virtio::DeviceHandle<virtio::Console> none;
    CHECK_FALSE(none);

    virtio::ConsoleOptions options;
    options.cols = 80;
    options.rows = 24;  // a size offered (VIRTIO_CONSOLE_F_SIZE), so set_size() applies
    auto owned = std::make_unique<virtio::Console>(std::make_unique<NullSink>(), options);
    virtio::Console& console = *owned;
    support::FakeDriver driver(std::move(owned));
    REQUIRE(driver.start());
    const virtio::DeviceHandle<virtio::Console> handle(driver.transport(), console);
    REQUIRE(handle);
    CHECK(&handle.transport() == &driver.transport());

    const unsigned before = driver.irq().count();
    handle.with([](virtio::Console& c) { c.set_size(132, 43); });
    CHECK(driver.read_config(offsetof(virtio_console_config, cols), 2) == 132);
    CHECK(driver.read_config(offsetof(virtio_console_config, rows), 2) == 43);
    CHECK(driver.irq().count() > before);  // the configuration change reached the driver

    // A value comes back from the model as its own type.
    const std::size_t pending = handle.with([](virtio::Console& c) { return c.pending_input(); });
    CHECK(pending == 0);
}
