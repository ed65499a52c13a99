// virtio-net, one queue pair, no control queue (virtio 1.2 sections 5.1.3 - 5.1.6).
#include "virtio/net.hpp"

#include <linux/virtio_ids.h>
#include "virtio/net_uapi.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

// 5.1.6: with VIRTIO_F_VERSION_1 every buffer starts with the 12-byte header, num_buffers included.
constexpr std::size_t kHeaderSize = sizeof(virtio_net_hdr_v1);
static_assert(kHeaderSize == 12);
constexpr std::size_t kEthernetHeader = 14;

constexpr std::uint64_t kOffloads = feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_CSUM) |
                                    feature_bit(VIRTIO_NET_F_HOST_TSO4) | feature_bit(VIRTIO_NET_F_HOST_TSO6) |
                                    feature_bit(VIRTIO_NET_F_GUEST_TSO4) | feature_bit(VIRTIO_NET_F_GUEST_TSO6) |
                                    feature_bit(VIRTIO_NET_F_HOST_ECN) | feature_bit(VIRTIO_NET_F_GUEST_ECN);

}  // namespace

Net::Net(std::unique_ptr<NetBackend> backend, NetOptions options)
    : backend_(std::move(backend)), options_(options), scratch_(kMaxFrame) {
    if (options_.queue_size < 2 || options_.queue_size > Virtqueue::kMaxSize ||
        (options_.queue_size & (options_.queue_size - 1)) != 0)
        options_.queue_size = 256;
}

std::uint32_t Net::device_id() const { return VIRTIO_ID_NET; }

std::uint64_t Net::device_features() const {
    std::uint64_t features = feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS) |
                             feature_bit(VIRTIO_NET_F_MRG_RXBUF) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
                             feature_bit(VIRTIO_RING_F_EVENT_IDX);
    if (backend_->has_vnet_header()) features |= backend_->offload_features() & kOffloads;
    return features;
}

bool Net::accept_features(std::uint64_t features) {
    // 5.1.3.1: the TSO and ECN features depend on the checksum ones.
    auto needs = [&](unsigned feature, unsigned required) {
        return !has_feature(features, feature) || has_feature(features, required);
    };
    return needs(VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_CSUM) && needs(VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_CSUM) &&
           needs(VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_CSUM) &&
           needs(VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_CSUM) &&
           (!has_feature(features, VIRTIO_NET_F_HOST_ECN) || has_feature(features, VIRTIO_NET_F_HOST_TSO4) ||
            has_feature(features, VIRTIO_NET_F_HOST_TSO6)) &&
           (!has_feature(features, VIRTIO_NET_F_GUEST_ECN) || has_feature(features, VIRTIO_NET_F_GUEST_TSO4) ||
            has_feature(features, VIRTIO_NET_F_GUEST_TSO6));
}

std::uint32_t Net::config_size() const { return sizeof(virtio_net_config); }

void Net::read_config(std::uint32_t offset, std::span<std::uint8_t> data) const {
    // 5.1.4: mac (F_MAC), status (F_STATUS: the link is always up); the rest needs features not
    // offered (MQ, MTU, SPEED_DUPLEX, RSS) and reads 0 except max_virtqueue_pairs = 1.
    virtio_net_config config{};
    std::memcpy(config.mac, options_.mac.data(), sizeof config.mac);
    config.status = VIRTIO_NET_S_LINK_UP;
    config.max_virtqueue_pairs = 1;
    std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(&config) + offset, data.size());
}

bool Net::activate(const Activation& activation) {
    if (!active_.activate(activation, {kReceiveQueue, kTransmitQueue})) return false;
    if (!backend_->set_offloads(activation.features)) {
        vmm::guest_error(log_, "virtio-net: the %.*s backend refused the negotiated offloads",
                         static_cast<int>(backend_->kind().size()), backend_->kind().data());
        active_.reset();
        return false;
    }
    return true;
}

void Net::reset() {
    // Held frames were for the driver that went away (a real NIC drops them with the link).
    stats_.rx_dropped += pending_.size();
    pending_.clear();
    waiting_for_buffers_ = false;
    active_.reset();
}

void Net::notify(std::uint16_t queue) {
    if (queue == kReceiveQueue) deliver_pending();  // the driver posted receive buffers
    else if (queue == kTransmitQueue) transmit();
}

void Net::describe(Description& out) const {
    out.add("rx_packets", stats_.rx_packets);
    out.add("rx_bytes", stats_.rx_bytes);
    out.add("rx_dropped", stats_.rx_dropped);
    out.add("rx_pending", pending_frames());  // frames held for want of receive buffers
    out.add("rx_errors", stats_.rx_errors);
    out.add("tx_packets", stats_.tx_packets);
    out.add("tx_bytes", stats_.tx_bytes);
    out.add("tx_dropped", stats_.tx_dropped);
    out.add("tx_errors", stats_.tx_errors);
    out.add_text("backend", backend_->describe());
}

// ---- the receive pump ---------------------------------------------------------------------------

void Net::update_events(EventHost& host) {
    // A backend with sockets and timers of its own (slirp) is serviced on the event loop too.
    if (!service_watched_ && backend_->service_fd() >= 0) {
        host.watch(backend_->service_fd(), "net service", [this] { backend_->service(); });
        service_watched_ = true;
    }
    // Backpressure: while a frame waits for receive buffers the backend's fd is not watched, until
    // the driver's refill kick (which brings the host back here). A transmit pass takes the
    // backend's answers too, so a kick of either queue may change this.
    const bool stalled = receive_stalled();
    if (stalled && receive_watched_) {
        host.unwatch(backend_->receive_fd());
        receive_watched_ = false;
    } else if (!stalled && !receive_watched_) {
        host.watch(backend_->receive_fd(), "net receive", [this] { receive_from_backend(); });
        receive_watched_ = true;
    }
    // A frame held only because the pass ran out of budget gets another pass.
    if (receive_pass_wanted()) host.request_pass(kReceiveQueue);
}

// ---- receive (5.1.6.4) ------------------------------------------------------------------------

void Net::receive_from_backend() {
    if (!receiveq()) {
        // No driver: the link is down as far as these frames are concerned. Bounded per call.
        for (std::size_t i = 0; i < kReceiveBatch && backend_->receive(scratch_) != 0; ++i) ++stats_.rx_dropped;
        return;
    }
    deliver_pending();
    take_from_backend();
    finish_receive();
}

void Net::take_from_backend() {
    // Bounded per call; the backend's fd stays readable while it has more, so the loop returns.
    // Once a frame finds no buffer it is held and the rest stay in the backend (backpressure:
    // receive_stalled() tells the machine to stop polling until the driver refills).
    for (std::size_t i = 0; i < kReceiveBatch && pending_.empty(); ++i) {
        const std::size_t n = backend_->receive(scratch_);
        if (n == 0) break;
        const std::span<const std::uint8_t> frame(scratch_.data(), std::min(n, scratch_.size()));
        if (deliver(frame) == Delivery::NoBuffers) hold(frame);
    }
}

void Net::finish_receive() {
    // A pass that ran out of budget says nothing about the ring: the driver may have refilled it
    // meanwhile and then has nothing to kick for.
    waiting_for_buffers_ = !pending_.empty() && !receiveq()->budget_exhausted();
    if (receiveq()->needs_notification()) active_.context().signal_used(kReceiveQueue);
}

void Net::hold(std::span<const std::uint8_t> frame) {
    if (pending_.size() >= kMaxPendingFrames) {
        ++stats_.rx_dropped;
        vmm::guest_error(log_, "virtio-net: guest not taking frames, dropping (%zu held)", pending_.size());
        return;
    }
    pending_.emplace_back(frame.begin(), frame.end());
}

void Net::deliver_pending() {
    if (!receiveq()) return;
    // Bounded by the held frames.
    while (!pending_.empty() && deliver(pending_.front()) != Delivery::NoBuffers) pending_.pop_front();
    finish_receive();
}

Net::Delivery Net::deliver(std::span<const std::uint8_t> frame) {
    virtio_net_hdr_v1 header{};
    std::span<const std::uint8_t> payload = frame;
    if (backend_->has_vnet_header()) {
        if (frame.size() < kHeaderSize) {
            ++stats_.rx_errors;
            return Delivery::Dropped;
        }
        std::memcpy(&header, frame.data(), kHeaderSize);
        payload = frame.subspan(kHeaderSize);
    }
    header.num_buffers = 1;  // 5.1.6.4: 1 without MRG_RXBUF; set to the count below with it
    const std::span<const std::uint8_t> header_bytes(reinterpret_cast<const std::uint8_t*>(&header), kHeaderSize);
    const Delivery result = has_feature(active_.features(), VIRTIO_NET_F_MRG_RXBUF)
                                ? deliver_merged(header_bytes, payload)
                                : deliver_single(header_bytes, payload);
    if (result == Delivery::Done) {
        ++stats_.rx_packets;
        stats_.rx_bytes += payload.size();
    }
    return result;
}

Net::Delivery Net::deliver_single(std::span<const std::uint8_t> header, std::span<const std::uint8_t> payload) {
    const Virtqueue::PopMark mark = receiveq()->mark();
    auto chain = receiveq()->pop();
    if (!chain) return Delivery::NoBuffers;
    if (chain->readable_bytes() != 0 || chain->writable_bytes() < header.size() + payload.size()) {
        // Too small for this frame (5.1.6.3.1 asks for buffers that fit any frame without
        // MRG_RXBUF): the frame is dropped, the buffer stays the driver's for the next one.
        ++stats_.rx_dropped;
        vmm::guest_error(log_, "virtio-net: receive buffer of %llu bytes too small for a %zu-byte frame",
                         static_cast<unsigned long long>(chain->writable_bytes()), header.size() + payload.size());
        if (!receiveq()->rewind(mark)) receiveq()->add_used(chain->head(), 0);
        return Delivery::Dropped;
    }
    ChainWriter writer(*chain, active_.memory());
    if (!writer.write(header) || !writer.write(payload)) {
        ++stats_.rx_errors;
        vmm::guest_error(log_, "virtio-net: receive buffer not writable");
        receiveq()->add_used(chain->head(), 0);
        return Delivery::Dropped;
    }
    receiveq()->add_used(chain->head(), writer.bytes_written());
    return Delivery::Done;
}

Net::Delivery Net::deliver_merged(std::span<const std::uint8_t> header, std::span<const std::uint8_t> payload) {
    struct Used {
        std::uint16_t head;
        std::uint32_t len;
    };
    std::vector<Used> used;
    const Virtqueue::PopMark mark = receiveq()->mark();
    std::optional<DescriptorChain> first;
    std::size_t done = 0;  // payload bytes written
    // Hands the popped buffers back; when the queue cannot rewind, completes them empty.
    auto give_back = [&](std::optional<std::uint16_t> also) {
        if (!also && receiveq()->rewind(mark)) return;
        for (const Used& u : used) receiveq()->add_used(u.head, 0);
        if (also) receiveq()->add_used(*also, 0);
    };
    // Bounded: one buffer per round, at most the queue size.
    while (first ? done < payload.size() : true) {
        if (used.size() >= receiveq()->size()) {
            ++stats_.rx_dropped;  // the whole ring does not hold the frame
            give_back(std::nullopt);
            return Delivery::Dropped;
        }
        auto chain = receiveq()->pop();
        if (!chain) {
            give_back(std::nullopt);
            return Delivery::NoBuffers;
        }
        const std::size_t need = first ? 1 : header.size();  // 5.1.6.3.1: the header fits the first buffer
        ChainWriter writer(*chain, active_.memory());
        bool ok = chain->readable_bytes() == 0 && chain->writable_bytes() >= need;
        if (ok && !first) ok = writer.write(header);
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(writer.remaining(), payload.size() - done));
        if (ok) ok = writer.write(payload.subspan(done, n));
        if (!ok) {
            ++stats_.rx_errors;
            vmm::guest_error(log_, "virtio-net: malformed or unwritable receive buffer");
            give_back(chain->head());
            return Delivery::Dropped;
        }
        done += n;
        used.push_back({chain->head(), writer.bytes_written()});
        if (!first) first = std::move(chain);
    }
    if (used.size() > 1) {
        const auto count = static_cast<std::uint16_t>(used.size());
        ChainWriter fix(*first, active_.memory());
        if (!fix.skip(offsetof(virtio_net_hdr_v1, num_buffers)) || !fix.write_obj(count)) {
            ++stats_.rx_errors;
            give_back(std::nullopt);
            return Delivery::Dropped;
        }
    }
    for (const Used& u : used) receiveq()->add_used(u.head, u.len);
    return Delivery::Done;
}

// ---- transmit (5.1.6.2) -----------------------------------------------------------------------

void Net::transmit() {
    if (!transmitq()) return;
    // Bounded by the ring: pop() yields at most `size` chains per avail idx update.
    while (auto chain = transmitq()->pop()) {
        if (!transmit_one(*chain)) ++stats_.tx_errors;
        transmitq()->add_used(chain->head(), 0);  // the device writes nothing into transmit buffers
    }
    backend_->flush();
    if (transmitq()->needs_notification()) active_.context().signal_used(kTransmitQueue);
    // What the backend answered meanwhile (slirp's ACKs come back from slirp_input) goes into the
    // receive queue in this pass: the transport raises one interrupt for both queues.
    if (receiveq() && pending_.empty()) {
        take_from_backend();
        finish_receive();
    }
}

bool Net::transmit_one(const DescriptorChain& chain) {
    const std::uint64_t total = chain.readable_bytes();
    if (chain.writable_bytes() != 0 || total < kHeaderSize + kEthernetHeader || total > kMaxFrame) {
        vmm::guest_error(log_, "virtio-net: transmit chain of %llu readable, %llu writable bytes refused",
                         static_cast<unsigned long long>(total),
                         static_cast<unsigned long long>(chain.writable_bytes()));
        return false;
    }
    ChainReader reader(chain, active_.memory());
    const std::span<std::uint8_t> frame(scratch_.data(), static_cast<std::size_t>(total));
    if (!reader.read(frame)) {
        vmm::guest_error(log_, "virtio-net: transmit buffer not readable");
        return false;
    }
    virtio_net_hdr_v1 header;
    std::memcpy(&header, frame.data(), kHeaderSize);
    const std::size_t length = frame.size() - kHeaderSize;
    // 5.1.6.2.1: NEEDS_CSUM only with CSUM, GSO only with the matching HOST_TSO feature, and the
    // checksum field inside the packet.
    const bool csum = (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
    const std::uint8_t gso = header.gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
    bool valid = (header.flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) == 0 &&
                 (!csum || has_feature(active_.features(), VIRTIO_NET_F_CSUM));
    if (csum) valid = valid && std::uint32_t{header.csum_start} + header.csum_offset + 2 <= length;
    if (gso == VIRTIO_NET_HDR_GSO_TCPV4)
        valid = valid && csum && has_feature(active_.features(), VIRTIO_NET_F_HOST_TSO4);
    else if (gso == VIRTIO_NET_HDR_GSO_TCPV6)
        valid = valid && csum && has_feature(active_.features(), VIRTIO_NET_F_HOST_TSO6);
    else valid = valid && gso == VIRTIO_NET_HDR_GSO_NONE;
    if ((header.gso_type & VIRTIO_NET_HDR_GSO_ECN) != 0)
        valid = valid && gso != VIRTIO_NET_HDR_GSO_NONE && has_feature(active_.features(), VIRTIO_NET_F_HOST_ECN);
    if (gso != VIRTIO_NET_HDR_GSO_NONE) valid = valid && header.gso_size != 0;
    if (!valid) {
        vmm::guest_error(log_, "virtio-net: transmit header flags 0x%x gso_type 0x%x not negotiated or inconsistent",
                         header.flags, header.gso_type);
        return false;
    }
    std::span<const std::uint8_t> out = frame.subspan(kHeaderSize);
    if (backend_->has_vnet_header()) {
        header.num_buffers = 0;  // meaningless on transmit; the tap expects 0
        std::memcpy(frame.data(), &header, kHeaderSize);
        out = frame;
    }
    if (!backend_->send(out)) {
        ++stats_.tx_dropped;
        return true;
    }
    ++stats_.tx_packets;
    stats_.tx_bytes += length;
    return true;
}

}  // namespace virtio
