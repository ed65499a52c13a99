// libFuzzer target: arbitrary sequences of MMIO register/config accesses, guest-memory writes,
// kicks, host events and resets against a MmioTransport wrapping virtio-blk or virtio-rng.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "tests/fuzz/fuzz_input.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/recording_interrupt.hpp"
#include "virtio/blk.hpp"
#include "virtio/block_backend.hpp"
#include "virtio/console.hpp"
#include "virtio/mmio_transport.hpp"
#include "virtio/rng.hpp"
#include "vmm/base/log.hpp"

namespace {

constexpr std::uint64_t kRamBase = 0x4000'0000;
constexpr std::uint64_t kRamSize = 64 * 1024;

// A 32 KiB disk in memory: no file I/O in the hot loop.
class MemoryBackend final : public virtio::BlockBackend {
public:
    std::uint64_t size() const override { return bytes_.size(); }
    bool read_at(std::uint64_t offset, std::span<std::uint8_t> out) override {
        if (offset > bytes_.size() || out.size() > bytes_.size() - offset) return false;
        std::memcpy(out.data(), bytes_.data() + offset, out.size());
        return true;
    }
    bool write_at(std::uint64_t offset, std::span<const std::uint8_t> in) override {
        if (offset > bytes_.size() || in.size() > bytes_.size() - offset) return false;
        std::memcpy(bytes_.data() + offset, in.data(), in.size());
        return true;
    }
    bool flush() override { return true; }

private:
    std::vector<std::uint8_t> bytes_ = std::vector<std::uint8_t>(32 * 1024);
};

class NullSink final : public virtio::ConsoleSink {
public:
    void write(std::span<const std::uint8_t>) override {}
};

using fuzz::Input;

void write_reg(virtio::MmioTransport& t, std::uint32_t offset, std::uint32_t value) {
    t.mmio_write(offset, {reinterpret_cast<const std::uint8_t*>(&value), 4});
}

// A well-behaved driver's setup with rings at fixed places, so inputs reach DRIVER_OK cheaply;
// the fuzzer then owns the ring contents through memory writes.
void canned_setup(virtio::MmioTransport& t, std::uint16_t size_shift, std::uint32_t features_low) {
    write_reg(t, VIRTIO_MMIO_STATUS, 0);
    write_reg(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    write_reg(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, features_low);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);  // VERSION_1
    write_reg(t, VIRTIO_MMIO_STATUS,
              VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    const std::uint32_t size = 1u << (size_shift % 9);  // up to 256 entries: rings fit 0x1000 / 0x1000 / 0x2000
    for (std::uint32_t q = 0; q < t.queue_count(); ++q) {
        const std::uint64_t base = kRamBase + 0x4000ULL * q;
        write_reg(t, VIRTIO_MMIO_QUEUE_SEL, q);
        write_reg(t, VIRTIO_MMIO_QUEUE_NUM, size);
        write_reg(t, VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<std::uint32_t>(base));
        write_reg(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<std::uint32_t>(base + 0x1000));
        write_reg(t, VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<std::uint32_t>(base + 0x2000));
        write_reg(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    write_reg(
        t, VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static bool quiet = (vmm::set_log_level(vmm::LogLevel::Error), true);
    (void)quiet;
    static support::FakeGuestRam ram(kRamBase, kRamSize);
    static const std::vector<std::uint8_t> zeros(kRamSize, 0);
    ram.write(kRamBase, zeros);

    Input in{data, size};
    support::RecordingInterrupt irq;
    std::unique_ptr<virtio::Device> device;
    const auto which = in.take<std::uint8_t>();
    switch (which % 3) {
        case 0:
            device = std::make_unique<virtio::Blk>(std::make_unique<MemoryBackend>(),
                                                   virtio::BlkOptions{(which & 4) != 0, "fuzz", 256});
            break;
        case 1: device = std::make_unique<virtio::Rng>(256); break;
        default:
            device =
                std::make_unique<virtio::Console>(std::make_unique<NullSink>(), virtio::ConsoleOptions{80, 25, 256});
            break;
    }
    virtio::MmioTransport transport(std::move(device), irq, ram.memory());

    // Bounded by the input length: every operation consumes at least one byte.
    while (!in.empty()) {
        const auto op = in.take<std::uint8_t>();
        switch (op % 8) {
            case 0: {  // register or config write of any size at any offset
                const auto offset = in.take<std::uint16_t>() % virtio::MmioTransport::kWindowSize;
                const std::size_t width = std::size_t{1} << (in.take<std::uint8_t>() % 4);
                const auto value = in.take<std::uint64_t>();
                transport.mmio_write(offset, {reinterpret_cast<const std::uint8_t*>(&value), width});
                break;
            }
            case 1: {  // register or config read
                const auto offset = in.take<std::uint16_t>() % virtio::MmioTransport::kWindowSize;
                const std::size_t width = std::size_t{1} << (in.take<std::uint8_t>() % 4);
                std::uint64_t value = 0;
                transport.mmio_read(offset, {reinterpret_cast<std::uint8_t*>(&value), width});
                break;
            }
            case 2: (void)transport.notify(in.take<std::uint16_t>() % 4); break;  // ioeventfd path (one pass)
            case 3: {  // the guest writes RAM (descriptors, rings, buffers)
                const auto offset = in.take<std::uint16_t>() % kRamSize;
                const std::size_t length = std::min<std::size_t>(in.take<std::uint8_t>(), in.remaining());
                const std::size_t fit = std::min<std::size_t>(length, kRamSize - offset);
                ram.write(kRamBase + offset, {data + in.pos, fit});
                in.pos += length;
                break;
            }
            case 4: {  // aligned 32-bit register write (the common case)
                const auto offset = (in.take<std::uint8_t>() * 4u) % 0x100;
                write_reg(transport, offset, in.take<std::uint32_t>());
                break;
            }
            case 5: {  // host event under the transport lock
                const auto n = in.take<std::uint8_t>();
                transport.with_device([&](virtio::Device& d) {
                    if (auto* console = dynamic_cast<virtio::Console*>(&d)) {
                        std::uint8_t bytes[255] = {};
                        console->receive_input({bytes, n});
                        console->set_size(n, 24);
                    }
                });
                break;
            }
            case 6: canned_setup(transport, in.take<std::uint8_t>(), in.take<std::uint32_t>()); break;
            default: write_reg(transport, VIRTIO_MMIO_STATUS, 0); break;  // the driver resets it
        }
    }
    return 0;
}
