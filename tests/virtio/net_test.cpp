// virtio-net end to end through the fake driver and a fake backend (virtio 1.2 5.1).
#include "virtio/net.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/support/fake_driver.hpp"
#include "tests/support/fake_net_backend.hpp"
#include "virtio/features.hpp"
#include "virtio/net_uapi.hpp"

using support::FakeDriver;
using support::FakeNetBackend;
using support::Segment;
using virtio::feature_bit;

namespace {

constexpr std::uint32_t kHdr = sizeof(virtio_net_hdr_v1);
constexpr std::uint64_t kNoMerge = ~feature_bit(VIRTIO_NET_F_MRG_RXBUF);

std::vector<std::uint8_t> frame_of(std::size_t size, std::uint8_t seed = 1) {
    std::vector<std::uint8_t> frame(size);
    for (std::size_t i = 0; i < size; ++i) frame[i] = static_cast<std::uint8_t>(seed + i * 7);
    return frame;
}

std::vector<std::uint8_t> with_header(const virtio_net_hdr_v1& header, const std::vector<std::uint8_t>& frame) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(&header);
    std::vector<std::uint8_t> out(kHdr + frame.size());
    std::copy(bytes, bytes + kHdr, out.begin());
    std::copy(frame.begin(), frame.end(), out.begin() + kHdr);
    return out;
}

struct Fixture {
    std::shared_ptr<FakeNetBackend::State> backend = std::make_shared<FakeNetBackend::State>();
    std::unique_ptr<FakeDriver> driver;

    explicit Fixture(bool vnet_header = false, std::uint64_t offloads = 0) {
        backend->vnet_header = vnet_header;
        backend->offloads = offloads;
        virtio::NetOptions options;
        options.mac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
        driver = std::make_unique<FakeDriver>(
            std::make_unique<virtio::Net>(std::make_unique<FakeNetBackend>(backend), options));
    }
    FakeDriver& d() { return *driver; }
    void receive() {
        d().transport().with_device([](virtio::Device& dev) { static_cast<virtio::Net&>(dev).receive_from_backend(); });
    }
    virtio::NetStats stats() {
        return d().transport().with_device([](virtio::Device& dev) { return static_cast<virtio::Net&>(dev).stats(); });
    }
    std::size_t pending() {
        return d().transport().with_device(
            [](virtio::Device& dev) { return static_cast<virtio::Net&>(dev).pending_frames(); });
    }
    // A transmit request: header + frame, split into two readable descriptors.
    std::uint16_t transmit(const virtio_net_hdr_v1& header, const std::vector<std::uint8_t>& frame) {
        const std::uint64_t h = d().ram().alloc(kHdr);
        const std::uint64_t f = d().ram().alloc(frame.size());
        d().ram().write_obj(h, header);
        d().ram().write(f, frame);
        const std::uint16_t head =
            d().add_chain(1, {Segment{h, kHdr, false}, Segment{f, std::uint32_t(frame.size()), false}});
        d().kick(1);
        return head;
    }
    std::uint64_t rx_buffer(std::uint32_t size) {
        const std::uint64_t buf = d().ram().alloc(size);
        d().add_chain(0, {Segment{buf, size, true}});
        return buf;
    }
};

}  // namespace

TEST_CASE("virtio-net describes itself: MAC, link up, mergeable buffers, no offloads without vnet headers") {
    Fixture f;
    CHECK(f.d().read_reg(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_NET);
    const std::uint64_t features = f.d().device_features();
    CHECK(virtio::has_feature(features, VIRTIO_NET_F_MAC));
    CHECK(virtio::has_feature(features, VIRTIO_NET_F_STATUS));
    CHECK(virtio::has_feature(features, VIRTIO_NET_F_MRG_RXBUF));
    CHECK_FALSE(virtio::has_feature(features, VIRTIO_NET_F_CSUM));
    CHECK_FALSE(virtio::has_feature(features, VIRTIO_NET_F_GUEST_TSO4));
    CHECK_FALSE(virtio::has_feature(features, VIRTIO_NET_F_CTRL_VQ));
    REQUIRE(f.d().start());
    for (unsigned i = 0; i < 6; ++i)
        CHECK(f.d().read_config(i, 1) == std::array<unsigned, 6>{0x52, 0x54, 0, 0xab, 0xcd, 0xef}[i]);
    CHECK(f.d().read_config(offsetof(virtio_net_config, status), 2) == VIRTIO_NET_S_LINK_UP);
}

TEST_CASE("virtio-net offers the backend's offloads with vnet headers and tells it what the driver took") {
    const std::uint64_t offloads = feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_HOST_TSO4) |
                                   feature_bit(VIRTIO_NET_F_GUEST_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_TSO4);
    Fixture f(true, offloads);
    CHECK((f.d().device_features() & offloads) == offloads);
    REQUIRE(f.d().start(~feature_bit(VIRTIO_NET_F_GUEST_TSO4)));
    CHECK(virtio::has_feature(f.backend->offloads_set, VIRTIO_NET_F_GUEST_CSUM));
    CHECK_FALSE(virtio::has_feature(f.backend->offloads_set, VIRTIO_NET_F_GUEST_TSO4));
}

TEST_CASE("virtio-net refuses TSO without the checksum feature it depends on (5.1.3.1)") {
    Fixture f(true, feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_HOST_TSO4));
    CHECK_FALSE(f.d().negotiate(~feature_bit(VIRTIO_NET_F_CSUM)));
    CHECK(f.d().negotiate());
}

TEST_CASE("Transmit: the header is stripped, the frame reaches the backend, the chain comes back") {
    Fixture f;
    REQUIRE(f.d().start());
    const auto frame = frame_of(60);
    const std::uint16_t head = f.transmit(virtio_net_hdr_v1{}, frame);
    REQUIRE(f.backend->sent.size() == 1);
    CHECK(f.backend->sent[0] == frame);
    auto used = f.d().pop_used(1);
    REQUIRE(used);
    CHECK(used->id == head);
    CHECK(used->len == 0);
    CHECK(f.stats().tx_packets == 1);
    CHECK(f.stats().tx_bytes == 60);
}

TEST_CASE("Transmit: the backend is flushed once per pass, after the pass's frames") {
    Fixture f;
    REQUIRE(f.d().start());
    for (int i = 0; i < 3; ++i) {
        const std::uint64_t h = f.d().ram().alloc(kHdr);
        const auto frame = frame_of(60, std::uint8_t(i));
        const std::uint64_t b = f.d().ram().alloc(frame.size());
        f.d().ram().write_obj(h, virtio_net_hdr_v1{});
        f.d().ram().write(b, frame);
        f.d().add_chain(1, {Segment{h, kHdr, false}, Segment{b, std::uint32_t(frame.size()), false}});
    }
    f.d().kick(1);  // one pass, three frames
    CHECK(f.backend->flushed_at == std::vector<std::size_t>{3});
    f.transmit(virtio_net_hdr_v1{}, frame_of(60, 9));
    CHECK(f.backend->flushed_at == std::vector<std::size_t>{3, 4});
}

TEST_CASE("A transmit pass also takes the backend's answers; one interrupt covers both queues") {
    // slirp answers a guest's segment from inside slirp_input (an ACK): the frame is ready when
    // the transmit pass ends, and goes to the guest in it, with the transmit completion.
    Fixture f;
    REQUIRE(f.d().start());
    const std::uint64_t buf = f.rx_buffer(2048);
    const auto answer = frame_of(54, 5);
    f.backend->inbound.push_back(answer);
    const unsigned irqs = f.d().irq().count();
    f.transmit(virtio_net_hdr_v1{}, frame_of(60));
    CHECK(f.backend->sent.size() == 1);
    REQUIRE(f.d().pop_used(1));
    auto used = f.d().pop_used(0);
    REQUIRE(used);
    CHECK(used->len == kHdr + answer.size());
    CHECK(f.d().ram().read_bytes(buf + kHdr, answer.size()) == answer);
    CHECK(f.d().irq().count() == irqs + 1);
}

TEST_CASE("Transmit with a vnet backend passes the offload header through (num_buffers zeroed)") {
    Fixture f(true, feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_HOST_TSO4));
    REQUIRE(f.d().start());
    virtio_net_hdr_v1 header{};
    header.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    header.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    header.gso_size = 1448;
    header.hdr_len = 54;
    header.csum_start = 34;
    header.csum_offset = 16;
    header.num_buffers = 7;
    const auto frame = frame_of(3000);
    f.transmit(header, frame);
    REQUIRE(f.backend->sent.size() == 1);
    header.num_buffers = 0;
    CHECK(f.backend->sent[0] == with_header(header, frame));
}

TEST_CASE("Transmit refuses malformed requests: counted, never sent, the chain returned") {
    Fixture f;
    REQUIRE(f.d().start());
    SUBCASE("a frame shorter than header + Ethernet header") { f.transmit(virtio_net_hdr_v1{}, frame_of(10)); }
    SUBCASE("NEEDS_CSUM without VIRTIO_NET_F_CSUM") {
        virtio_net_hdr_v1 header{};
        header.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        f.transmit(header, frame_of(60));
    }
    SUBCASE("GSO without HOST_TSO4") {
        virtio_net_hdr_v1 header{};
        header.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
        header.gso_size = 1000;
        f.transmit(header, frame_of(60));
    }
    SUBCASE("an unknown header flag") {
        virtio_net_hdr_v1 header{};
        header.flags = 0x80;
        f.transmit(header, frame_of(60));
    }
    SUBCASE("a device-writable descriptor in a transmit chain") {
        const std::uint64_t buf = f.d().ram().alloc(100);
        f.d().add_chain(1, {Segment{buf, 80, false}, Segment{buf + 80, 20, true}});
        f.d().kick(1);
    }
    SUBCASE("a frame larger than any Ethernet frame") {
        const std::uint64_t buf = f.d().ram().alloc(virtio::Net::kMaxFrame + 1);
        f.d().add_chain(1, {Segment{buf, std::uint32_t(virtio::Net::kMaxFrame + 1), false}});
        f.d().kick(1);
    }
    CHECK(f.backend->sent.empty());
    CHECK(f.stats().tx_errors == 1);
    auto used = f.d().pop_used(1);
    REQUIRE(used);
    CHECK(used->len == 0);
    CHECK((f.d().status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
}

TEST_CASE("Transmit backpressure: a full backend drops frames, counted, and the ring keeps moving") {
    Fixture f;
    REQUIRE(f.d().start());
    f.backend->send_capacity = 1;
    for (int i = 0; i < 3; ++i) f.transmit(virtio_net_hdr_v1{}, frame_of(60, std::uint8_t(i)));
    CHECK(f.backend->sent.size() == 1);
    CHECK(f.stats().tx_packets == 1);
    CHECK(f.stats().tx_dropped == 2);
    for (int i = 0; i < 3; ++i) CHECK(f.d().pop_used(1));
}

TEST_CASE("Receive without MRG_RXBUF: one buffer per frame, header with num_buffers 1") {
    Fixture f;
    REQUIRE(f.d().start(kNoMerge));
    const std::uint64_t buf = f.rx_buffer(1526);
    const auto frame = frame_of(100);
    f.backend->inbound.push_back(frame);
    f.receive();
    auto used = f.d().pop_used(0);
    REQUIRE(used);
    CHECK(used->len == kHdr + 100);
    const auto header = f.d().ram().read_obj<virtio_net_hdr_v1>(buf);
    CHECK(header.num_buffers == 1);
    CHECK(header.flags == 0);
    CHECK(header.gso_type == VIRTIO_NET_HDR_GSO_NONE);
    CHECK(f.d().ram().read_bytes(buf + kHdr, 100) == frame);
    CHECK(f.stats().rx_packets == 1);
    CHECK(f.stats().rx_bytes == 100);
    CHECK(f.d().irq().count() >= 1);
}

TEST_CASE("Receive without MRG_RXBUF: a buffer too small drops the frame, counted, and stays the driver's") {
    Fixture f;
    REQUIRE(f.d().start(kNoMerge));
    const std::uint64_t buf = f.rx_buffer(50);
    f.backend->inbound.push_back(frame_of(100));
    f.receive();
    CHECK_FALSE(f.d().pop_used(0));
    CHECK(f.stats().rx_dropped == 1);
    const auto small = frame_of(30, 9);
    f.backend->inbound.push_back(small);
    f.receive();
    auto used = f.d().pop_used(0);
    REQUIRE(used);
    CHECK(used->len == kHdr + 30);
    CHECK(f.d().ram().read_bytes(buf + kHdr, 30) == small);
}

TEST_CASE("Receive with MRG_RXBUF spreads a frame over buffers and counts them in num_buffers") {
    Fixture f;
    REQUIRE(f.d().start());
    std::vector<std::uint64_t> bufs;
    for (int i = 0; i < 3; ++i) bufs.push_back(f.rx_buffer(1000));
    const auto frame = frame_of(2500);
    f.backend->inbound.push_back(frame);
    f.receive();
    std::vector<std::uint32_t> lens;
    while (auto used = f.d().pop_used(0)) lens.push_back(used->len);
    CHECK(lens == std::vector<std::uint32_t>{1000, 1000, kHdr + 2500 - 2000});
    CHECK(f.d().ram().read_obj<virtio_net_hdr_v1>(bufs[0]).num_buffers == 3);
    std::vector<std::uint8_t> got = f.d().ram().read_bytes(bufs[0] + kHdr, 1000 - kHdr);
    auto more = f.d().ram().read_bytes(bufs[1], 1000);
    got.insert(got.end(), more.begin(), more.end());
    more = f.d().ram().read_bytes(bufs[2], 2500 - got.size());
    got.insert(got.end(), more.begin(), more.end());
    CHECK(got == frame);
}

TEST_CASE("Receive with MRG_RXBUF: too few buffers hands them back; the frame waits for the refill") {
    Fixture f;
    f.d().set_auto_used_event(true);
    REQUIRE(f.d().start());
    const std::uint64_t first = f.rx_buffer(1000);
    const auto frame = frame_of(2500, 3);
    f.backend->inbound.push_back(frame);
    f.receive();
    CHECK_FALSE(f.d().pop_used(0));
    CHECK(f.pending() == 1);
    f.rx_buffer(1000);
    f.rx_buffer(1000);
    f.d().kick(0);  // the refill
    CHECK(f.pending() == 0);
    std::vector<std::uint32_t> lens;
    while (auto used = f.d().pop_used(0)) lens.push_back(used->len);
    REQUIRE(lens.size() == 3);
    CHECK(f.d().ram().read_obj<virtio_net_hdr_v1>(first).num_buffers == 3);
    CHECK(f.d().ram().read_bytes(first + kHdr, 16) == std::vector<std::uint8_t>(frame.begin(), frame.begin() + 16));
}

TEST_CASE("Receive backpressure: without buffers one frame is held, the rest stay in the backend") {
    Fixture f;
    REQUIRE(f.d().start());
    for (int i = 0; i < 10; ++i) f.backend->inbound.push_back(frame_of(60, std::uint8_t(i)));
    f.receive();
    CHECK(f.pending() == 1);
    CHECK(f.backend->inbound.size() == 9);
    CHECK(f.d().transport().with_device(
        [](virtio::Device& d) { return static_cast<virtio::Net&>(d).receive_stalled(); }));
    f.receive();  // still no buffers: nothing more is taken, nothing dropped
    CHECK(f.backend->inbound.size() == 9);
    CHECK(f.stats().rx_dropped == 0);
    std::vector<std::uint64_t> bufs;
    for (int i = 0; i < 10; ++i) bufs.push_back(f.rx_buffer(2048));
    f.d().kick(0);  // the refill delivers the held frame
    CHECK(f.pending() == 0);
    f.receive();  // and the backend's frames follow, in order
    int n = 0;
    while (f.d().pop_used(0)) ++n;
    CHECK(n == 10);
    CHECK(f.d().ram().read_bytes(bufs[9] + kHdr, 60) == frame_of(60, 9));
    CHECK(f.stats().rx_packets == 10);
    CHECK(f.stats().rx_dropped == 0);
}

TEST_CASE("Receive: a frame held because the pass ran out of budget is no stall; the next pass delivers it") {
    // Net::update_events stops watching the backend while receive_stalled() and waits for the
    // driver's receive-queue kick. A driver that refilled its ring while the device was filling it (NAPI
    // on another vCPU) has every buffer posted and nothing to kick for: if the pass's budget
    // (one ring's worth, Virtqueue::begin_pass) ran out, the held frame must go out in another
    // pass instead, or the flow stalls for good.
    Fixture f;
    f.d().set_auto_used_event(true);
    REQUIRE(f.d().start());  // 16-entry queues: a pass takes at most 16 buffers
    const std::uint16_t ring = 16;
    for (int i = 0; i < ring; ++i) f.rx_buffer(2048);
    std::size_t refilled = 0;
    f.backend->on_receive = [&] {
        while (f.d().pop_used(0)) {
            f.rx_buffer(2048);
            ++refilled;
        }
    };
    for (int i = 0; i < 40; ++i) f.backend->inbound.push_back(frame_of(60, std::uint8_t(i)));
    f.receive();
    REQUIRE(f.pending() == 1);  // the 17th frame found the budget spent, not the ring empty
    CHECK(refilled == ring);
    CHECK(f.d().avail_idx(0) != f.d().used_idx(0));  // the driver's buffers are there
    CHECK_FALSE(f.d().transport().with_device(
        [](virtio::Device& d) { return static_cast<virtio::Net&>(d).receive_stalled(); }));
    CHECK(f.d().transport().with_device(
        [](virtio::Device& d) { return static_cast<virtio::Net&>(d).receive_pass_wanted(); }));
    // What Net::update_events asks for: another pass through the receive queue (its doorbell).
    CHECK_FALSE(f.d().transport().notify(virtio::Net::kReceiveQueue));
    CHECK(f.pending() == 0);
    CHECK(f.stats().rx_packets == ring + 1);
    CHECK(f.stats().rx_dropped == 0);
}

TEST_CASE("Receive with a vnet backend keeps the offload header and sets num_buffers") {
    Fixture f(true, feature_bit(VIRTIO_NET_F_GUEST_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_TSO4));
    REQUIRE(f.d().start());
    const std::uint64_t buf = f.rx_buffer(4096);
    virtio_net_hdr_v1 header{};
    header.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    header.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    header.gso_size = 1448;
    header.csum_start = 34;
    header.csum_offset = 16;
    const auto frame = frame_of(3000);
    f.backend->inbound.push_back(with_header(header, frame));
    f.receive();
    auto used = f.d().pop_used(0);
    REQUIRE(used);
    CHECK(used->len == kHdr + 3000);
    const auto got = f.d().ram().read_obj<virtio_net_hdr_v1>(buf);
    CHECK(got.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM);
    CHECK(got.gso_type == VIRTIO_NET_HDR_GSO_TCPV4);
    CHECK(got.gso_size == 1448);
    CHECK(got.csum_start == 34);
    CHECK(got.num_buffers == 1);
    CHECK(f.d().ram().read_bytes(buf + kHdr, 3000) == frame);
}

TEST_CASE("Receive: a buffer with device-readable parts is refused, counted, the device stays healthy") {
    Fixture f;
    REQUIRE(f.d().start());
    const std::uint64_t buf = f.d().ram().alloc(2048);
    f.d().add_chain(0, {Segment{buf, 100, false}, Segment{buf + 100, 1948, true}});
    f.backend->inbound.push_back(frame_of(60));
    f.receive();
    CHECK(f.stats().rx_errors == 1);
    CHECK(f.stats().rx_packets == 0);
    auto used = f.d().pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 0);
    CHECK((f.d().status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
}

TEST_CASE("Frames arriving before DRIVER_OK or after a reset are dropped, counted") {
    Fixture f;
    f.backend->inbound.push_back(frame_of(60));
    f.receive();
    CHECK(f.stats().rx_dropped == 1);
    REQUIRE(f.d().start());
    f.receive();  // nothing left
    f.backend->inbound.push_back(frame_of(60));
    f.receive();  // no buffers: held
    CHECK(f.pending() == 1);
    f.d().reset();
    CHECK(f.pending() == 0);
    CHECK(f.stats().rx_dropped == 2);
}

// ---- the receive pump (Net::update_events) ------------------------------------------------------

namespace {

// Records what the device asks of the machine's event loop; the test fires the handlers.
struct RecordingHost final : virtio::EventHost {
    std::map<int, std::function<void()>> watched;
    std::vector<std::uint16_t> passes;
    void watch(int fd, std::string, std::function<void()> ready) override {
        REQUIRE(watched.count(fd) == 0);
        watched[fd] = std::move(ready);
    }
    void unwatch(int fd) override { REQUIRE(watched.erase(fd) == 1); }
    void request_pass(std::uint16_t queue) override { passes.push_back(queue); }
};

// As virtio::DeviceEvents does: an event under the transport lock, then update_events.
void serve(Fixture& f, RecordingHost& host, const std::function<void()>& event = {}) {
    f.d().transport().with_device([&](virtio::Device& d) {
        if (event) event();
        d.update_events(host);
    });
}

}  // namespace

TEST_CASE("Receive pump: the backend's fd is watched while the guest takes frames, not while one waits") {
    Fixture f;
    f.backend->receive_fd = 40;
    f.backend->service_fd = 41;
    REQUIRE(f.d().start());
    RecordingHost host;
    serve(f, host);
    REQUIRE(host.watched.count(40) == 1);
    REQUIRE(host.watched.count(41) == 1);
    serve(f, host, host.watched[41]);  // slirp's sockets and timers
    CHECK(f.backend->services == 1);

    // No receive buffers: one frame is held and the backend is left alone (backpressure).
    for (int i = 0; i < 3; ++i) f.backend->inbound.push_back(frame_of(60, std::uint8_t(i)));
    serve(f, host, host.watched[40]);
    CHECK(f.pending() == 1);
    CHECK(host.watched.count(40) == 0);
    CHECK(host.watched.count(41) == 1);
    serve(f, host);  // a transmit kick meanwhile changes nothing
    CHECK(host.watched.count(40) == 0);

    // The driver's refill kick delivers the held frame and watches the backend again.
    for (int i = 0; i < 3; ++i) f.rx_buffer(2048);
    f.d().kick(0);
    serve(f, host);
    CHECK(f.pending() == 0);
    REQUIRE(host.watched.count(40) == 1);
    serve(f, host, host.watched[40]);
    CHECK(f.stats().rx_packets == 3);
    CHECK(host.passes.empty());
}

TEST_CASE("Receive pump: a frame held only because the pass ran out of budget asks for another pass") {
    Fixture f;
    f.backend->receive_fd = 40;
    f.d().set_auto_used_event(true);
    REQUIRE(f.d().start());  // 16-entry queues: a pass takes at most 16 buffers
    RecordingHost host;
    serve(f, host);
    for (int i = 0; i < 16; ++i) f.rx_buffer(2048);
    f.backend->on_receive = [&] {
        while (f.d().pop_used(0)) f.rx_buffer(2048);  // the driver refills on another CPU
    };
    for (int i = 0; i < 40; ++i) f.backend->inbound.push_back(frame_of(60, std::uint8_t(i)));
    serve(f, host, host.watched[40]);
    REQUIRE(f.pending() == 1);
    CHECK(host.watched.count(40) == 1);  // no stall: the driver's buffers are there
    CHECK(host.passes == std::vector<std::uint16_t>{virtio::Net::kReceiveQueue});
}
