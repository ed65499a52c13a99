// Split virtqueue behaviour (virtio 1.2 2.7.6-2.7.10): setup validation, pop, add_used, broken
// queues and notification suppression, with rings laid out by hand in fake guest RAM.
#include "virtio/queue.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_config.h>

#include <array>

#include "tests/support/fake_driver.hpp"
#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

using support::FakeGuestRam;
using virtio::QueueLayout;
using virtio::QueueSetupError;
using virtio::Virtqueue;

namespace {

constexpr std::uint64_t kEventIdx = virtio::feature_bit(VIRTIO_RING_F_EVENT_IDX);

struct Rings {
    FakeGuestRam ram;
    vmm::DmaMemory dma{ram.memory()};
    std::uint16_t size;
    QueueLayout layout;
    std::uint64_t buffer;

    explicit Rings(std::uint16_t queue_size = 4) : size(queue_size) {
        layout.size = size;
        layout.desc = vmm::Iova{ram.alloc(16ULL * size, 16)};
        layout.avail = vmm::Iova{ram.alloc(6 + 2ULL * size, 2)};
        layout.used = vmm::Iova{ram.alloc(6 + 8ULL * size, 4)};
        buffer = ram.alloc(0x1000);
        for (std::uint16_t i = 0; i < size; ++i) {
            vring_desc d{};
            d.addr = buffer + 64ULL * i;
            d.len = 64;
            d.flags = VRING_DESC_F_WRITE;
            ram.write_obj(layout.desc.value + 16ULL * i, d);
        }
    }
    std::unique_ptr<Virtqueue> queue(std::uint64_t features = 0) {
        return Virtqueue::create(layout, size, dma, features);
    }
    std::uint16_t avail_idx() { return ram.read_obj<std::uint16_t>(layout.avail.value + 2); }
    void offer(std::uint16_t head) {
        const std::uint16_t idx = avail_idx();
        ram.write_obj<std::uint16_t>(layout.avail.value + 4 + 2ULL * (idx % size), head);
        ram.write_obj<std::uint16_t>(layout.avail.value + 2, static_cast<std::uint16_t>(idx + 1));
    }
    void set_avail_idx(std::uint16_t idx) { ram.write_obj<std::uint16_t>(layout.avail.value + 2, idx); }
    void set_avail_flags(std::uint16_t f) { ram.write_obj<std::uint16_t>(layout.avail.value, f); }
    void set_used_event(std::uint16_t e) { ram.write_obj<std::uint16_t>(layout.avail.value + 4 + 2ULL * size, e); }
    std::uint16_t used_idx() { return ram.read_obj<std::uint16_t>(layout.used.value + 2); }
    vring_used_elem used(std::uint16_t slot) {
        return ram.read_obj<vring_used_elem>(layout.used.value + 4 + 8ULL * (slot % size));
    }
    std::uint16_t avail_event() { return ram.read_obj<std::uint16_t>(layout.used.value + 4 + 8ULL * size); }
};

QueueSetupError setup_error(const QueueLayout& layout, std::uint16_t max, const vmm::DmaMemory& dma) {
    QueueSetupError error = QueueSetupError::None;
    auto q = Virtqueue::create(layout, max, dma, 0, &error);
    CHECK((q == nullptr) == (error != QueueSetupError::None));
    return error;
}

}  // namespace

TEST_CASE("Virtqueue setup rejects bad sizes") {
    Rings r(4);
    QueueLayout l = r.layout;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::None);
    l.size = 0;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::BadSize);
    l.size = 3;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::BadSize);
    l.size = 8;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::BadSize);  // above the device maximum
    l.size = 2;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::None);
}

TEST_CASE("Virtqueue setup rejects misaligned ring areas") {
    Rings r(4);
    QueueLayout l = r.layout;
    l.desc.value += 8;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::Misaligned);
    l = r.layout;
    l.avail.value += 1;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::Misaligned);
    l = r.layout;
    l.used.value += 2;
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::Misaligned);
}

TEST_CASE("Virtqueue setup rejects ring areas outside guest RAM, partly or wholly") {
    Rings r(4);
    QueueLayout l = r.layout;
    l.desc = vmm::Iova{r.ram.end() - 16};  // the table runs off the end
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::DescUnreachable);
    l = r.layout;
    l.avail = vmm::Iova{r.ram.end() - 8};  // 6 + 2*4 = 14 bytes do not fit
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::AvailUnreachable);
    l = r.layout;
    l.used = vmm::Iova{0x1000};
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::UsedUnreachable);
    l = r.layout;
    l.used = vmm::Iova{~0ULL - 3};  // wraps
    CHECK(setup_error(l, 4, r.dma) == QueueSetupError::UsedUnreachable);
}

TEST_CASE("Virtqueue pops available chains in order and returns nothing when empty") {
    Rings r;
    auto q = r.queue();
    REQUIRE(q);
    CHECK_FALSE(q->pop());
    r.offer(2);
    r.offer(0);
    auto first = q->pop();
    auto second = q->pop();
    REQUIRE(first);
    REQUIRE(second);
    CHECK(first->head() == 2);
    CHECK(second->head() == 0);
    CHECK_FALSE(q->pop());
    CHECK(q->last_avail_idx() == 2);
}

TEST_CASE("G7 Virtqueue add_used writes the element and then the used idx") {
    Rings r;
    auto q = r.queue();
    r.offer(3);
    auto chain = q->pop();
    REQUIRE(chain);
    CHECK(q->add_used(chain->head(), 17));
    CHECK(r.used_idx() == 1);
    CHECK(r.used(0).id == 3);
    CHECK(r.used(0).len == 17);
    CHECK_FALSE(q->add_used(4, 0));  // a head the queue cannot have handed out
}

TEST_CASE("Virtqueue breaks when avail idx runs more than the queue size ahead") {
    Rings r(4);
    auto q = r.queue();
    r.set_avail_idx(5);
    CHECK_FALSE(q->pop());
    CHECK(q->is_broken());
    r.set_avail_idx(0);
    CHECK_FALSE(q->pop());  // broken stays broken until the queue is rebuilt
    CHECK_FALSE(q->add_used(0, 0));
}

TEST_CASE("Virtqueue accepts avail idx exactly the queue size ahead, across the 16-bit wrap") {
    Rings r(4);
    auto q = r.queue();
    // Consume 65534 entries' worth by moving both sides: drive the ring near the wrap point.
    for (unsigned i = 0; i < 65534; ++i) {
        r.offer(static_cast<std::uint16_t>(i % 4));
        auto chain = q->pop();
        REQUIRE(chain);
        REQUIRE(q->add_used(chain->head(), 0));
    }
    for (std::uint16_t i = 0; i < 4; ++i) r.offer(i);  // idx wraps from 65534 to 2
    CHECK(r.avail_idx() == 2);
    unsigned popped = 0;
    while (q->pop()) ++popped;
    CHECK(popped == 4);
    CHECK_FALSE(q->is_broken());
}

TEST_CASE("Virtqueue breaks on an out-of-range head index in the avail ring") {
    Rings r(4);
    auto q = r.queue();
    r.offer(4);
    CHECK_FALSE(q->pop());
    CHECK(q->is_broken());
}

TEST_CASE("Virtqueue completes a malformed chain with length 0 and carries on") {
    Rings r(4);
    auto q = r.queue();
    vring_desc loop{};
    loop.addr = r.buffer;
    loop.len = 4;
    loop.flags = VRING_DESC_F_NEXT;
    loop.next = 1;
    r.ram.write_obj(r.layout.desc.value + 16, loop);  // descriptor 1 points at itself
    r.offer(1);
    r.offer(2);
    auto chain = q->pop();
    REQUIRE(chain);
    CHECK(chain->head() == 2);
    CHECK(q->malformed_chains() == 1);
    CHECK(r.used_idx() == 1);
    CHECK(r.used(0).id == 1);
    CHECK(r.used(0).len == 0);
    CHECK_FALSE(q->is_broken());
}

TEST_CASE("G8 without EVENT_IDX the device notifies unless the driver set NO_INTERRUPT") {
    Rings r;
    auto q = r.queue();
    CHECK_FALSE(q->needs_notification());  // nothing used yet
    r.offer(0);
    q->add_used(q->pop()->head(), 0);
    CHECK(q->needs_notification());
    CHECK_FALSE(q->needs_notification());  // nothing new since
    r.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    r.offer(1);
    q->add_used(q->pop()->head(), 0);
    CHECK_FALSE(q->needs_notification());
}

TEST_CASE("G8 with EVENT_IDX the device notifies exactly when used idx passes used_event") {
    Rings r(8);
    auto q = r.queue(kEventIdx);
    r.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);  // ignored with EVENT_IDX
    r.set_used_event(0);
    auto complete = [&] {
        r.offer(0);
        auto chain = q->pop();
        REQUIRE(chain);
        q->add_used(chain->head(), 0);
    };
    complete();  // used idx 0 -> 1 crosses used_event 0
    CHECK(q->needs_notification());
    r.set_used_event(3);
    complete();  // 1 -> 2: not yet
    CHECK_FALSE(q->needs_notification());
    complete();  // 2 -> 3: not yet
    CHECK_FALSE(q->needs_notification());
    complete();  // 3 -> 4 crosses 3
    CHECK(q->needs_notification());
    r.set_used_event(4);
    complete();
    complete();  // 4 -> 6 in one batch crosses 4
    CHECK(q->needs_notification());
}

TEST_CASE("G8 with EVENT_IDX the device publishes avail_event as the next index it will read") {
    Rings r(8);
    auto q = r.queue(kEventIdx);
    CHECK_FALSE(q->pop());
    CHECK(r.avail_event() == 0);
    r.offer(0);
    r.offer(1);
    CHECK(q->pop());
    CHECK(r.avail_event() == 1);
    CHECK(q->pop());
    CHECK(r.avail_event() == 2);
    CHECK_FALSE(q->pop());
    CHECK(r.avail_event() == 2);
}

TEST_CASE("Virtqueue accepts indirect chains only when INDIRECT_DESC was negotiated") {
    Rings r(4);
    const std::uint64_t table = r.ram.alloc(16, 16);
    vring_desc inner{};
    inner.addr = r.buffer;
    inner.len = 8;
    inner.flags = VRING_DESC_F_WRITE;
    r.ram.write_obj(table, inner);
    vring_desc pointer{};
    pointer.addr = table;
    pointer.len = 16;
    pointer.flags = VRING_DESC_F_INDIRECT;
    r.ram.write_obj(r.layout.desc.value, pointer);

    auto without = r.queue();
    r.offer(0);
    CHECK_FALSE(without->pop());  // malformed without the feature: completed with length 0
    CHECK(without->malformed_chains() == 1);

    auto with = r.queue(virtio::feature_bit(VIRTIO_RING_F_INDIRECT_DESC));
    r.offer(0);
    // A fresh queue starts at avail index 0 and sees both offers; both are valid now.
    auto chain = with->pop();
    REQUIRE(chain);
    CHECK(chain->writable_bytes() == 8);
    CHECK(with->malformed_chains() == 0);
}

TEST_CASE("G7 Virtqueue never writes the descriptor table or the avail ring") {
    Rings r(8);
    auto q = r.queue(kEventIdx);
    r.offer(1);
    r.offer(2);
    const auto desc_before = r.ram.read_bytes(r.layout.desc.value, 16 * 8);
    const auto avail_before = r.ram.read_bytes(r.layout.avail.value, 6 + 2 * 8);
    while (auto chain = q->pop()) q->add_used(chain->head(), 64);
    (void)q->needs_notification();
    CHECK(r.ram.read_bytes(r.layout.desc.value, 16 * 8) == desc_before);
    CHECK(r.ram.read_bytes(r.layout.avail.value, 6 + 2 * 8) == avail_before);
    CHECK(r.used_idx() == 2);
}

// ---- notification suppression for a polling device (2.7.7, 2.7.10; CONFORMANCE.md G8) -----------

namespace {

// The driver's kick decision after adding buffers old..new (Linux virtqueue_kick_prepare_split).
bool driver_would_kick(Rings& r, bool event_idx, std::uint16_t old_idx, std::uint16_t new_idx) {
    if (event_idx) return vring_need_event(r.avail_event(), new_idx, old_idx) != 0;
    return (r.ram.read_obj<std::uint16_t>(r.layout.used.value) & VRING_USED_F_NO_NOTIFY) == 0;
}

}  // namespace

TEST_CASE("G8 a polling device without EVENT_IDX sets VRING_USED_F_NO_NOTIFY and clears it again") {
    Rings r(4);
    auto q = r.queue();
    CHECK(driver_would_kick(r, false, 0, 1));
    q->disable_notifications();
    CHECK(r.ram.read_obj<std::uint16_t>(r.layout.used.value) == VRING_USED_F_NO_NOTIFY);
    r.offer(0);
    CHECK_FALSE(driver_would_kick(r, false, 0, 1));
    REQUIRE(q->pop());
    CHECK_FALSE(q->enable_notifications());  // nothing pending
    CHECK(r.ram.read_obj<std::uint16_t>(r.layout.used.value) == 0);
    CHECK(driver_would_kick(r, false, 1, 2));
}

TEST_CASE("G8 a polling device with EVENT_IDX keeps avail_event behind the driver: no batch kicks") {
    Rings r(8);
    auto q = r.queue(kEventIdx);
    CHECK_FALSE(q->pop());  // arms avail_event = 0: the first buffer kicks
    CHECK(driver_would_kick(r, true, 0, 1));
    q->disable_notifications();
    // Any batch the driver adds from where the device stands, one buffer or a full ring, and
    // across the 16-bit wrap of the indices: never a kick.
    std::uint16_t idx = 0;
    unsigned kicks = 0, lost = 0;  // counted, so a failure is one report rather than 20000
    for (int round = 0; round < 20000; ++round) {
        const std::uint16_t batch = static_cast<std::uint16_t>(1 + round % 8);
        for (std::uint16_t i = 0; i < batch; ++i) r.offer(i);
        kicks += driver_would_kick(r, true, idx, static_cast<std::uint16_t>(idx + batch));
        for (std::uint16_t i = 0; i < batch; ++i) lost += !q->pop();
        // The poller may consume the batch before the driver looks at avail_event.
        kicks += driver_would_kick(r, true, idx, static_cast<std::uint16_t>(idx + batch));
        idx = static_cast<std::uint16_t>(idx + batch);
        kicks += driver_would_kick(r, true, idx, static_cast<std::uint16_t>(idx + 1));
    }
    CHECK(kicks == 0);
    CHECK(lost == 0);
    CHECK(q->last_avail_idx() == idx);
    CHECK_FALSE(q->enable_notifications());
    CHECK(r.avail_event() == idx);  // asks for a kick at the next buffer again
    CHECK(driver_would_kick(r, true, idx, static_cast<std::uint16_t>(idx + 1)));
}

TEST_CASE("G8 re-enabling notifications reports buffers added while they were off (2.7.10 race)") {
    for (bool event_idx : {false, true}) {
        CAPTURE(event_idx);
        Rings r(4);
        auto q = r.queue(event_idx ? kEventIdx : 0);
        q->disable_notifications();
        CHECK_FALSE(q->has_pending());
        r.offer(2);  // the driver saw "no kick needed" and will not kick
        CHECK(q->has_pending());
        CHECK(q->enable_notifications());  // the device must look at it itself
        auto chain = q->pop();
        REQUIRE(chain);
        CHECK(chain->head() == 2);
        CHECK_FALSE(q->has_pending());
        CHECK_FALSE(q->enable_notifications());  // idempotent; still nothing
    }
}

TEST_CASE("G8 suppression on a broken queue does nothing and reports nothing pending") {
    Rings r(4);
    auto q = r.queue();
    r.set_avail_idx(9);  // more than the queue size ahead
    CHECK_FALSE(q->pop());
    REQUIRE(q->is_broken());
    q->disable_notifications();
    CHECK(r.ram.read_obj<std::uint16_t>(r.layout.used.value) == 0);
    CHECK_FALSE(q->has_pending());
    CHECK_FALSE(q->enable_notifications());
}

TEST_CASE("Virtqueue: a request moves at most the queue's request limit, and a pass ends once its bytes are spent") {
    Rings r(4);  // four writable 64-byte buffers
    auto q = r.queue();
    q->limit_request_bytes(48);
    for (std::uint16_t i = 0; i < 4; ++i) r.offer(i);
    q->begin_pass(4, 100);
    std::array<std::uint8_t, 64> bytes{};

    auto first = q->pop();
    REQUIRE(first);
    CHECK(first->transfer_limit() == 48);
    virtio::ChainWriter over(*first, r.dma);
    CHECK_FALSE(over.write(bytes));  // 64 > 48: refused before anything moves
    CHECK(first->transferred() == 0);
    virtio::ChainWriter within(*first, r.dma);
    CHECK(within.write(std::span(bytes).first(48)));
    CHECK_FALSE(within.write(std::span(bytes).first(1)));  // the limit is per request, not per writer
    CHECK(q->transferred().pass_bytes == 48);

    auto second = q->pop();
    REQUIRE(second);
    CHECK(virtio::ChainWriter(*second, r.dma).write(std::span(bytes).first(48)));
    auto third = q->pop();  // 96 of 100 bytes spent: still within the pass
    REQUIRE(third);
    CHECK(virtio::ChainWriter(*third, r.dma).write(std::span(bytes).first(8)));
    CHECK_FALSE(q->pop());  // 104 >= 100: the pass is over although a chain and chain budget are left
    CHECK(q->budget_exhausted());
    CHECK(q->transferred().total_bytes == 104);

    q->begin_pass(4, 100);  // the next pass serves the fourth
    CHECK(q->pop());
    CHECK(q->transferred().pass_bytes == 0);
}
