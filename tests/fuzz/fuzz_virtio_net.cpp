// libFuzzer target: virtio-net through the real virtio-mmio transport and the fake driver, with a
// fake backend (with or without vnet headers and offloads, full on demand). The input drives the
// transmit path (descriptor chains of any shape, direction and length, hostile headers), the
// receive path (frames of any size into buffers of any size, mergeable or not), configuration
// space reads at any offset and width, kicks, resets and renegotiation. Besides ASan/UBSan it
// traps on broken invariants: a frame handed to the backend larger than the device allows, a
// transmit completion that claims written bytes, counters that disagree with the backend.
// Resource bounds while the hostile guest runs: DMA goes through a counting translation, and each
// step may move at most what its requests are allowed (Net::max_request_bytes per chain, plus
// the descriptor tables walked); frames held for the guest stay within kMaxPendingFrames; and the
// session ends with as many host descriptors open as it started with.
#include <fuzzer/FuzzedDataProvider.h>
#include <linux/virtio_mmio.h>

#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "tests/support/aliased_chain.hpp"
#include "tests/support/fake_driver.hpp"
#include "tests/support/fake_net_backend.hpp"
#include "virtio/features.hpp"
#include "virtio/net.hpp"
#include "virtio/net_uapi.hpp"
#include "vmm/base/log.hpp"

namespace {

using support::Segment;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr std::uint16_t kQueueSize = 16;
// What one step may move through DMA: every chain of both queues at its request limit, each with
// an indirect table to walk (at most 4 descriptors here), plus the rings.
constexpr std::uint64_t kStepBytes = 2 * kQueueSize * (virtio::Net::kMaxFrame + 14 + 4 * 16) + 64 * 1024;

std::size_t open_descriptors() {
    std::size_t count = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (const dirent* entry = ::readdir(dir))
            if (entry->d_name[0] != '.') ++count;
        ::closedir(dir);
    }
    return count;
}

// One RAM for all inputs, cleared before each: a fresh 8 MiB mapping per input spent most of the
// run in page faults.
std::shared_ptr<support::FakeGuestRam> shared_ram() {
    static const auto ram = std::make_shared<support::FakeGuestRam>(support::FakeGuestRam::kDefaultBase, 8 << 20);
    ram->clear();
    return ram;
}

class Session {
public:
    explicit Session(FuzzedDataProvider& fdp) : fdp_(fdp) {
        state_->vnet_header = fdp_.ConsumeBool();
        state_->offloads = fdp_.ConsumeIntegral<std::uint64_t>();
        state_->send_capacity = fdp_.ConsumeBool() ? SIZE_MAX : fdp_.ConsumeIntegralInRange<std::size_t>(0, 8);
        driver_ = std::make_unique<support::FakeDriver>(
            std::make_unique<virtio::Net>(std::make_unique<support::FakeNetBackend>(state_)), shared_ram(), dma_);
        start();
    }
    ~Session() {
        driver_.reset();
        require(open_descriptors() == descriptors_at_start_);
    }

    void run() {
        // Bounded: each step consumes input, and there are at most 64 of them.
        for (int step = 0; step < 64 && fdp_.remaining_bytes() > 0; ++step) {
            switch (fdp_.ConsumeIntegralInRange<int>(0, 9)) {
                case 0:
                case 1:
                case 2: transmit(); break;
                case 3:
                case 4: rx_buffer(); break;
                case 5:
                case 6: inbound(); break;
                case 7: config(); break;
                case 8: corrupt(); break;
                default:
                    if (fdp_.ConsumeBool()) start();
                    else driver_->kick(fdp_.ConsumeIntegralInRange<std::uint16_t>(0, 2));
                    break;
            }
            check();
        }
    }

private:
    void start() {
        const std::uint64_t wanted =
            fdp_.ConsumeBool() ? support::FakeDriver::kAllFeatures : fdp_.ConsumeIntegral<std::uint64_t>();
        started_ = driver_->start(wanted, kQueueSize);
        driver_->set_auto_used_event(fdp_.ConsumeBool());
    }

    std::vector<Segment> segments(bool tx) {
        std::vector<Segment> out;
        const int count = fdp_.ConsumeIntegralInRange<int>(1, 4);
        for (int i = 0; i < count; ++i) {
            const std::uint32_t len = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 2048)
                                                         : fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 70000);
            const std::uint64_t addr = ram_alloc(len);
            if (!addr) break;
            const bool writable = fdp_.ConsumeIntegralInRange<int>(0, 7) == 0 ? !tx : tx ? false : true;
            out.push_back({addr, len, writable});
        }
        // Readable before writable, as the driver side of a chain must be (2.7.4.2): the device's
        // handling of the wrong order is the descriptor-chain fuzzer's business.
        std::stable_partition(out.begin(), out.end(), [](const Segment& s) { return !s.writable; });
        return out;
    }

    std::uint64_t ram_alloc(std::uint32_t len) {
        if (used_ram_ + len + 64 > (6u << 20)) return 0;
        used_ram_ += len + 64;
        return driver_->ram().alloc(len == 0 ? 1 : len);
    }

    void transmit() {
        auto segs = segments(true);
        if (segs.empty() || !started_) return;
        // A header: plausible or random.
        virtio_net_hdr_v1 header{};
        if (fdp_.ConsumeBool()) {
            header.flags = fdp_.ConsumeIntegral<std::uint8_t>();
            header.gso_type = fdp_.ConsumeIntegral<std::uint8_t>();
            header.hdr_len = fdp_.ConsumeIntegral<std::uint16_t>();
            header.gso_size = fdp_.ConsumeIntegral<std::uint16_t>();
            header.csum_start = fdp_.ConsumeIntegral<std::uint16_t>();
            header.csum_offset = fdp_.ConsumeIntegral<std::uint16_t>();
        }
        if (segs[0].len >= sizeof header) driver_->ram().write_obj(segs[0].addr, header);
        const auto layout = fdp_.ConsumeBool() ? support::ChainLayout::Direct : support::ChainLayout::Indirect;
        driver_->add_chain(1, segs, layout);
        if (fdp_.ConsumeBool()) driver_->kick(1);
    }

    void rx_buffer() {
        auto segs = segments(false);
        if (segs.empty() || !started_) return;
        driver_->add_chain(0, segs, fdp_.ConsumeBool() ? support::ChainLayout::Direct : support::ChainLayout::Indirect);
        if (fdp_.ConsumeBool()) driver_->kick(0);
    }

    void inbound() {
        const std::size_t size = fdp_.ConsumeBool()
                                     ? fdp_.ConsumeIntegralInRange<std::size_t>(0, 2000)
                                     : fdp_.ConsumeIntegralInRange<std::size_t>(0, virtio::Net::kMaxFrame + 16);
        std::vector<std::uint8_t> frame(size, static_cast<std::uint8_t>(size));
        if (size >= 12 && fdp_.ConsumeBool()) frame[0] = fdp_.ConsumeIntegral<std::uint8_t>();
        state_->inbound.push_back(std::move(frame));
        driver_->transport().with_device(
            [](virtio::Device& d) { static_cast<virtio::Net&>(d).receive_from_backend(); });
    }

    void config() {
        static constexpr unsigned kSizes[] = {1, 2, 4, 8};
        const unsigned size = kSizes[fdp_.ConsumeIntegralInRange<int>(0, 3)];
        const std::uint64_t offset = fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 0x100);
        std::uint8_t data[8] = {};
        if (fdp_.ConsumeBool()) driver_->read_raw(0x100 + offset, {data, size});
        else driver_->write_raw(0x100 + offset, {data, size});
    }

    // The guest rewrites ring memory behind the device's back.
    void corrupt() {
        if (!started_) return;
        ring_corrupted_ = true;
        const std::uint16_t q = fdp_.ConsumeIntegralInRange<std::uint16_t>(0, 1);
        const auto& rings = driver_->rings(q);
        const std::uint64_t area = fdp_.ConsumeBool() ? rings.desc : rings.avail;
        const std::uint64_t at = area + fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 16u * kQueueSize - 1);
        driver_->ram().write_obj(at, fdp_.ConsumeIntegral<std::uint8_t>());
    }

    void check() {
        const std::uint64_t moved = dma_->moved();
        require(moved - moved_at_last_check_ <= kStepBytes);
        moved_at_last_check_ = moved;
        const std::size_t held = driver_->transport().with_device(
            [](virtio::Device& d) { return static_cast<virtio::Net&>(d).pending_frames(); });
        require(held <= virtio::Net::kMaxPendingFrames);
        for (const auto& frame : state_->sent) require(frame.size() <= virtio::Net::kMaxFrame);
        const virtio::NetStats s =
            driver_->transport().with_device([](virtio::Device& d) { return static_cast<virtio::Net&>(d).stats(); });
        require(s.tx_packets == state_->sent.size());
        // Transmit completions carry length 0, unless the guest rewrote a descriptor to point a
        // receive buffer at its own used ring (corrupt()): then received bytes land there, which
        // is its own memory to spoil.
        if (started_)
            while (auto used = driver_->pop_used(1)) require(ring_corrupted_ || used->len == 0);
    }

    FuzzedDataProvider& fdp_;
    const std::size_t descriptors_at_start_ = open_descriptors();
    std::shared_ptr<support::CountingTranslator> dma_ = std::make_shared<support::CountingTranslator>();
    std::uint64_t moved_at_last_check_ = 0;
    std::shared_ptr<support::FakeNetBackend::State> state_ = std::make_shared<support::FakeNetBackend::State>();
    std::unique_ptr<support::FakeDriver> driver_;
    bool started_ = false;
    bool ring_corrupted_ = false;
    std::uint64_t used_ram_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool quiet = [] {
        vmm::set_log_level(vmm::LogLevel::Error);
        return true;
    }();
    (void)quiet;
    FuzzedDataProvider fdp(data, size);
    try {
        Session session(fdp);
        session.run();
    } catch (const std::runtime_error&) {
        // The fake driver's own misuse guard (e.g. its descriptor table is full): not a finding.
    }
    return 0;
}
