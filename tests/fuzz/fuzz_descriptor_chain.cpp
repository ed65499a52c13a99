// libFuzzer target: arbitrary guest memory, ring placement and descriptor bytes -> build a
// Virtqueue, walk every chain (directly and through pop()), stream each through ChainReader /
// ChainWriter, complete it and ask for notification. Nothing may crash, hang or over-allocate.
//
// Bounded mode (flag bit 16): the queue gets a request limit and a pass budget, as the transport
// sets them, and each popped chain is streamed to the end with no loop bound of the harness's own:
// only the shared limit (DescriptorChain::charge) stops it. The harness traps when a request
// moved more than its limit or a pass more than its budget plus one request, and a chain of
// aliased descriptors (corpus/descriptor_chain/aliased-indirect-*) would otherwise stream 4 GiB.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "tests/fuzz/fuzz_input.hpp"
#include "tests/support/fake_driver.hpp"
#include "virtio/chain_io.hpp"
#include "virtio/descriptor_chain.hpp"
#include "virtio/features.hpp"
#include "virtio/queue.hpp"
#include "virtio/ring.hpp"
#include "vmm/base/dma_memory.hpp"
#include "vmm/base/log.hpp"

namespace {

constexpr std::uint64_t kRamBase = 0x4000'0000;
constexpr std::uint64_t kRamSize = 64 * 1024;

// Identity translation that splits every access at 4 KiB boundaries and refuses one page, so the
// fragmented and the faulting DmaMemory paths are exercised too.
class FragmentingTranslator final : public vmm::Translator {
public:
    explicit FragmentingTranslator(std::uint64_t hole) : hole_(hole) {}
    bool translate(vmm::Iova iova, std::uint64_t length, vmm::Access, vmm::FragmentVisitor& visitor) const override {
        if (length == 0) return false;
        auto last = vmm::last_byte(iova.value, length);
        if (!last) return false;
        if (iova.value <= hole_ + 0xfff && *last >= hole_) return false;
        std::uint64_t at = iova.value;
        std::uint64_t left = length;
        while (left != 0) {
            const std::uint64_t piece = std::min(left, 0x1000 - (at & 0xfff));
            if (!visitor.visit(vmm::GuestPhysAddr{at}, piece)) return false;
            at += piece;
            left -= piece;
        }
        return true;
    }

private:
    std::uint64_t hole_;
};

using fuzz::Input;

void stream(const virtio::DescriptorChain& chain, const vmm::DmaMemory& memory) {
    std::uint8_t chunk[512];
    virtio::ChainReader reader(chain, memory);
    // Bounded: at most 64 reads of 512 bytes (a chain may claim 4 GiB; the RAM is 64 KiB).
    for (int i = 0; i < 64 && reader.remaining() != 0; ++i) {
        const std::size_t n = std::min<std::uint64_t>(sizeof chunk, reader.remaining());
        if (!reader.read({chunk, n})) break;
    }
    virtio::ChainWriter writer(chain, memory);
    std::memset(chunk, 0x5a, sizeof chunk);
    for (int i = 0; i < 64 && writer.remaining() != 0; ++i) {
        const std::size_t n = std::min<std::uint64_t>(sizeof chunk, writer.remaining());
        if (!writer.write({chunk, n})) break;
    }
}

void require(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr std::uint64_t kRequestLimit = 8 * 1024;
constexpr std::uint64_t kPassBytes = 32 * 1024;

// Reads, then writes, until the chain (or its limit) says no: the loops end only through the
// shared bound.
void stream_to_end(const virtio::DescriptorChain& chain, const vmm::DmaMemory& memory) {
    std::uint8_t chunk[512];
    virtio::ChainReader reader(chain, memory);
    while (reader.remaining() != 0) {
        const std::size_t n = std::min<std::uint64_t>(sizeof chunk, reader.remaining());
        if (!reader.read({chunk, n})) break;
    }
    virtio::ChainWriter writer(chain, memory);
    std::memset(chunk, 0x5a, sizeof chunk);
    while (writer.remaining() != 0) {
        const std::size_t n = std::min<std::uint64_t>(sizeof chunk, writer.remaining());
        if (!writer.write({chunk, n})) break;
    }
    require(chain.transferred() <= chain.transfer_limit());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static bool quiet = (vmm::set_log_level(vmm::LogLevel::Error), true);
    (void)quiet;
    static support::FakeGuestRam ram(kRamBase, kRamSize);

    Input in{data, size};
    const auto shift = in.take<std::uint8_t>();
    const auto flags = in.take<std::uint8_t>();
    const auto desc_off = in.take<std::uint16_t>();
    const auto avail_off = in.take<std::uint16_t>();
    const auto used_off = in.take<std::uint16_t>();
    const auto hole_page = in.take<std::uint8_t>();
    // Up to 1024 entries: the rules do not depend on the size, and 32768-long loops only slow the search.
    const std::uint16_t queue_size = static_cast<std::uint16_t>(1u << (shift % 11));

    // The rest of the input is guest RAM (zero beyond it), so descriptors, rings and buffers all
    // come from the fuzzer.
    std::uint8_t* host = ram.memory().host_pointer(vmm::GuestPhysAddr{kRamBase}, kRamSize);
    const std::size_t copied = std::min<std::size_t>(size - in.pos, kRamSize);
    std::memcpy(host, data + in.pos, copied);
    std::memset(host + copied, 0, kRamSize - copied);

    std::uint64_t features = 0;
    if (flags & 1) features |= virtio::feature_bit(VIRTIO_RING_F_INDIRECT_DESC);
    if (flags & 2) features |= virtio::feature_bit(VIRTIO_RING_F_EVENT_IDX);
    std::shared_ptr<const vmm::Translator> translator;
    if (flags & 4) translator = std::make_shared<FragmentingTranslator>(kRamBase + 0x1000ULL * (hole_page % 16));
    const vmm::DmaMemory memory = translator ? vmm::DmaMemory(ram.memory(), translator) : vmm::DmaMemory(ram.memory());

    // The first heads of the table, walked directly (each walk is bounded by the queue size).
    const vmm::Iova table{kRamBase + desc_off};
    const unsigned heads = std::min<unsigned>(queue_size, 16);
    for (unsigned head = 0; head < heads; ++head) {
        auto chain = virtio::DescriptorChain::walk(memory, table, queue_size, static_cast<std::uint16_t>(head),
                                                   (flags & 1) != 0);
        if (chain.is_valid() && (flags & 8)) stream(chain, memory);
    }

    // Through the queue, as a device would.
    virtio::QueueLayout layout{queue_size, table, vmm::Iova{kRamBase + avail_off}, vmm::Iova{kRamBase + used_off}};
    auto queue = virtio::Virtqueue::create(layout, virtio::Virtqueue::kMaxSize, memory, features);
    if (!queue) return 0;
    const bool bounded = (flags & 16) != 0;
    if (bounded) queue->limit_request_bytes(kRequestLimit);
    for (unsigned round = 0; round < 2; ++round) {
        if (bounded) queue->begin_pass(queue_size, kPassBytes);
        for (unsigned i = 0; i < 16; ++i) {
            auto chain = queue->pop();
            if (!chain) break;
            if (bounded) stream_to_end(*chain, memory);
            else stream(*chain, memory);
            queue->add_used(chain->head(), static_cast<std::uint32_t>(chain->writable_bytes()));
        }
        if (bounded) require(queue->transferred().pass_bytes < kPassBytes + kRequestLimit);
        (void)queue->needs_notification();
    }
    return 0;
}
