// virtio-rng request handling (virtio 1.2 section 5.4.6).
#include "virtio/rng.hpp"

#include <linux/virtio_ids.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

// Fills `out` from the host entropy pool; false if the host cannot provide it.
bool host_random(std::span<std::uint8_t> out) {
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

Rng::Rng(std::uint16_t queue_size)
    : queue_size_(queue_size >= 1 && queue_size <= Virtqueue::kMaxSize ? queue_size : 64) {}

std::uint32_t Rng::device_id() const { return VIRTIO_ID_RNG; }

std::uint64_t Rng::device_features() const {
    return feature_bit(VIRTIO_RING_F_INDIRECT_DESC) | feature_bit(VIRTIO_RING_F_EVENT_IDX);
}

bool Rng::activate(const Activation& activation) { return active_.activate(activation, {0}); }

void Rng::reset() { active_.reset(); }

void Rng::notify(std::uint16_t queue) {
    Virtqueue* requests = active_.queue(0);
    if (queue != 0 || !requests) return;
    std::array<std::uint8_t, 4096> chunk;
    while (auto chain = requests->pop()) {
        ChainWriter writer(*chain, active_.memory());
        std::uint64_t budget = std::min<std::uint64_t>(writer.remaining(), kMaxBytesPerRequest);
        while (budget != 0) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(budget, chunk.size()));
            if (!host_random({chunk.data(), n})) {
                vmm::log_error("virtio-rng: getrandom failed; completing the request short");
                break;
            }
            if (!writer.write({chunk.data(), n})) {
                vmm::guest_error(log_, "virtio-rng: request buffer not writable");
                break;
            }
            budget -= n;
        }
        requests->add_used(chain->head(), writer.bytes_written());
    }
    if (requests->needs_notification()) active_.context().signal_used(0);
}

}  // namespace virtio
