#include "virtio/p9.hpp"

#include <linux/virtio_9p.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {

P9::P9(std::unique_ptr<P9Handler> server, std::string tag) : server_(std::move(server)) {
    tag.resize(std::min(tag.size(), kMaxTagLength));
    // struct virtio_9p_config: tag_len (le16), then the tag, not NUL-terminated.
    config_.resize(sizeof(virtio_9p_config) + tag.size());
    const std::uint16_t length = static_cast<std::uint16_t>(tag.size());
    config_[0] = static_cast<std::uint8_t>(length & 0xff);
    config_[1] = static_cast<std::uint8_t>(length >> 8);
    std::memcpy(config_.data() + sizeof(virtio_9p_config), tag.data(), tag.size());
}

std::uint32_t P9::device_id() const { return VIRTIO_ID_9P; }

std::uint64_t P9::device_features() const {
    return feature_bit(VIRTIO_9P_MOUNT_TAG) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
           feature_bit(VIRTIO_RING_F_EVENT_IDX);
}

void P9::read_config(std::uint32_t offset, std::span<std::uint8_t> data) const {
    std::memcpy(data.data(), config_.data() + offset, data.size());
}

bool P9::activate(const Activation& activation) { return active_.activate(activation, {0}); }

void P9::reset() {
    active_.reset();
    server_->reset();  // a new driver starts a new 9P session
}

void P9::notify(std::uint16_t queue) {
    Virtqueue* requests = active_.queue(0);
    if (queue != 0 || !requests) return;
    // Bounded by the ring, as in Blk::notify.
    while (auto chain = requests->pop()) process(*chain);
    if (requests->needs_notification()) active_.context().signal_used(0);
}

void P9::process(const DescriptorChain& chain) {
    // The request is the readable part, at most one negotiated msize (the server checks its
    // size field against what arrived); the reply goes to the writable part.
    const std::uint64_t readable = chain.readable_bytes();
    const std::uint32_t writable =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(chain.writable_bytes(), UINT32_MAX));
    const std::uint64_t take = std::min<std::uint64_t>(readable, server_->msize());
    request_.resize(static_cast<std::size_t>(take));
    ChainReader reader(chain, active_.memory());
    if (readable > take || !reader.read(request_)) {
        vmm::guest_error(log_, "virtio-9p: request of %llu bytes is larger than msize %u or unreadable",
                         static_cast<unsigned long long>(readable), server_->msize());
        // Answered as malformed (Rlerror EPROTO, untagged): nothing of it is served.
        request_.clear();
    }
    server_->handle(request_, reply_, writable);
    ChainWriter writer(chain, active_.memory());
    const bool written = !reply_.empty() && writer.write(reply_);
    if (!written && !reply_.empty())
        vmm::guest_error(log_, "virtio-9p: reply of %zu bytes could not be written", reply_.size());
    active_.queue(0)->add_used(chain.head(), written ? writer.bytes_written() : 0);
}

}  // namespace virtio
