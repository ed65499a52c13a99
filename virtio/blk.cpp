// virtio-blk request handling (virtio 1.2 sections 5.2.5 "Device configuration layout" and
// 5.2.6 "Device Operation").
#include "virtio/blk.hpp"

#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/ring.hpp"

namespace virtio {
namespace {

static_assert(sizeof(virtio_blk_outhdr) == 16, "5.2.6: type, reserved, sector");

// Streams guest buffers to / from the backend piece by piece, inside DmaMemory::access (so an
// IOMMU mapping cannot go away mid-transfer), without an intermediate copy.
class BackendTransfer final : public vmm::HostVisitor {
public:
    enum class Direction { ToGuest, FromGuest };  // a read request, a write request
    BackendTransfer(BlockBackend& backend, std::uint64_t offset, Direction direction)
        : backend_(backend), offset_(offset), direction_(direction) {}
    bool visit(std::uint8_t* host, std::uint64_t length) override {
        const bool done = direction_ == Direction::ToGuest ? backend_.read_at(offset_, {host, length})
                                                           : backend_.write_at(offset_, {host, length});
        if (!done) return false;
        offset_ += length;
        return true;
    }

private:
    BlockBackend& backend_;
    std::uint64_t offset_;
    const Direction direction_;
};

// Writes `length` zero bytes at the writer's position, in 4 KiB pieces (length <= kMaxRequestData,
// checked in process()).
bool write_zeros(ChainWriter& writer, std::uint64_t length) {
    static constexpr std::array<std::uint8_t, 4096> kZeros{};
    while (length != 0) {
        const std::uint64_t n = std::min<std::uint64_t>(length, kZeros.size());
        if (!writer.write({kZeros.data(), n})) return false;
        length -= n;
    }
    return true;
}

}  // namespace

Blk::Blk(std::unique_ptr<BlockBackend> backend, BlkOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      capacity_bytes_(backend_->size() / kSectorSize * kSectorSize),
      config_(sizeof(virtio_blk_config), 0) {
    if (options_.queue_size < 4 || options_.queue_size > Virtqueue::kMaxSize) options_.queue_size = 256;
    virtio_blk_config config{};
    config.capacity = capacity_bytes_ / kSectorSize;
    // Two descriptors of every request carry the header and the status byte (5.2.5); size_max
    // times seg_max is the largest request served (kMaxRequestData).
    config.seg_max =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(options_.queue_size - 2, kMaxRequestData / kSegmentSize));
    config.size_max = kSegmentSize;
    config.blk_size = kSectorSize;
    std::memcpy(config_.data(), &config, sizeof config);
}

std::uint32_t Blk::device_id() const { return VIRTIO_ID_BLOCK; }

std::uint64_t Blk::device_features() const {
    std::uint64_t features = feature_bit(VIRTIO_BLK_F_SIZE_MAX) | feature_bit(VIRTIO_BLK_F_SEG_MAX) |
                             feature_bit(VIRTIO_BLK_F_BLK_SIZE) | feature_bit(VIRTIO_BLK_F_FLUSH) |
                             feature_bit(VIRTIO_RING_F_INDIRECT_DESC) | feature_bit(VIRTIO_RING_F_EVENT_IDX);
    if (options_.read_only) features |= feature_bit(VIRTIO_BLK_F_RO);
    return features;
}

std::uint32_t Blk::config_size() const { return static_cast<std::uint32_t>(config_.size()); }

void Blk::read_config(std::uint32_t offset, std::span<std::uint8_t> data) const {
    std::memcpy(data.data(), config_.data() + offset, data.size());
}

bool Blk::activate(const Activation& activation) { return active_.activate(activation, {0}); }

void Blk::reset() { active_.reset(); }

void Blk::notify(std::uint16_t queue) {
    Virtqueue* requests = active_.queue(0);
    if (queue != 0 || !requests) return;
    // Bounded by the transport's pass: pop() yields at most one ring's worth per notify, and a
    // guest that keeps refilling gets the rest on a later pass (MmioTransport::notify).
    while (auto chain = requests->pop()) process(*chain);
    if (requests->needs_notification()) active_.context().signal_used(0);
}

bool Blk::in_capacity(std::uint64_t sector, std::uint64_t length, std::uint64_t* offset) {
    // 5.2.6.1: data is a multiple of 512 bytes; the request must lie within the capacity.
    auto start = vmm::checked_mul(sector, kSectorSize);
    auto end = start ? vmm::checked_add(*start, length) : std::nullopt;
    if (length % kSectorSize != 0 || !end || *end > capacity_bytes_) {
        vmm::guest_error(log_, "virtio-blk: request at sector %llu, %llu bytes, outside %llu sectors",
                         static_cast<unsigned long long>(sector), static_cast<unsigned long long>(length),
                         static_cast<unsigned long long>(capacity_sectors()));
        return false;
    }
    *offset = *start;
    return true;
}

std::uint8_t Blk::read_request(std::uint64_t sector, const DescriptorChain& chain, std::uint64_t data_len) {
    std::uint64_t offset = 0;
    if (!in_capacity(sector, data_len, &offset)) return VIRTIO_BLK_S_IOERR;
    ChainWriter data(chain, active_.memory());
    BackendTransfer transfer(*backend_, offset, BackendTransfer::Direction::ToGuest);
    if (data.visit(data_len, transfer)) return VIRTIO_BLK_S_OK;
    vmm::guest_error(log_, "virtio-blk: read at sector %llu failed (host I/O or guest buffer)",
                     static_cast<unsigned long long>(sector));
    return VIRTIO_BLK_S_IOERR;
}

std::uint8_t Blk::write_request(std::uint64_t sector, const DescriptorChain& chain) {
    ChainReader data(chain, active_.memory());
    if (!data.skip(sizeof(virtio_blk_outhdr))) return VIRTIO_BLK_S_IOERR;
    // 5.2.6.2: a read-only device fails writes and writes no data.
    if (options_.read_only) {
        vmm::guest_error(log_, "virtio-blk: write to a read-only disk");
        return VIRTIO_BLK_S_IOERR;
    }
    const std::uint64_t length = data.remaining();
    std::uint64_t offset = 0;
    if (!in_capacity(sector, length, &offset)) return VIRTIO_BLK_S_IOERR;
    BackendTransfer transfer(*backend_, offset, BackendTransfer::Direction::FromGuest);
    if (data.visit(length, transfer)) return VIRTIO_BLK_S_OK;
    vmm::guest_error(log_, "virtio-blk: write at sector %llu failed (host I/O or guest buffer)",
                     static_cast<unsigned long long>(sector));
    return VIRTIO_BLK_S_IOERR;
}

std::uint8_t Blk::get_id(const DescriptorChain& chain, std::uint64_t data_len) {
    // 5.2.6: up to 20 bytes, NUL-padded (not NUL-terminated when exactly 20 long).
    std::array<std::uint8_t, VIRTIO_BLK_ID_BYTES> id{};
    std::memcpy(id.data(), options_.serial.data(), std::min(options_.serial.size(), id.size()));
    ChainWriter data(chain, active_.memory());
    const std::uint64_t n = std::min<std::uint64_t>(data_len, id.size());
    if (!data.write({id.data(), n})) return VIRTIO_BLK_S_IOERR;
    // Any writable room beyond 20 bytes (before the status) is padding too.
    return write_zeros(data, data_len - n) ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
}

void Blk::process(const DescriptorChain& chain) {
    const std::uint64_t writable = chain.writable_bytes();
    if (writable == 0) {
        // Nowhere to put the status byte: the request cannot be answered in-band.
        vmm::guest_error(log_, "virtio-blk: request without a writable status byte");
        active_.queue(0)->add_used(chain.head(), 0);
        return;
    }
    // 5.2.6: the status is the last writable byte; everything before it is the data area.
    const std::uint64_t data_len = writable - 1;
    if (data_len > kMaxRequestData || chain.readable_bytes() > sizeof(virtio_blk_outhdr) + kMaxRequestData) {
        // More than size_max * seg_max: no driver that read the config sends this, and aliased
        // descriptors make it cheap to claim. The status alone answers it; used length 0, as
        // the data area is left as it was (2.7.8.2: at least len bytes written).
        vmm::guest_error(log_, "virtio-blk: request of %llu readable, %llu writable bytes exceeds %llu bytes of data",
                         static_cast<unsigned long long>(chain.readable_bytes()),
                         static_cast<unsigned long long>(writable), static_cast<unsigned long long>(kMaxRequestData));
        ChainWriter tail(chain, active_.memory());
        if (tail.skip(data_len)) tail.write_obj(std::uint8_t{VIRTIO_BLK_S_IOERR});
        active_.queue(0)->add_used(chain.head(), 0);
        return;
    }
    ChainReader reader(chain, active_.memory());
    const auto header = reader.read_obj<virtio_blk_outhdr>();
    std::uint8_t status = VIRTIO_BLK_S_IOERR;
    bool data_written = false;
    if (!header) {
        vmm::guest_error(log_, "virtio-blk: request header missing or unreadable");
    } else if (fail_next_ > 0 && header->type != VIRTIO_BLK_T_GET_ID) {
        --fail_next_;
        ++forced_failures_;
        vmm::log_info("virtio-blk: request at sector %llu failed on purpose (fail-next)",
                      static_cast<unsigned long long>(header->sector));
    } else {
        switch (header->type) {
            case VIRTIO_BLK_T_IN:
                status = read_request(header->sector, chain, data_len);
                data_written = status == VIRTIO_BLK_S_OK;
                break;
            case VIRTIO_BLK_T_OUT: status = write_request(header->sector, chain); break;
            case VIRTIO_BLK_T_FLUSH:
                if (options_.read_only) status = VIRTIO_BLK_S_IOERR;
                else status = backend_->flush() ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
                break;
            case VIRTIO_BLK_T_GET_ID:
                status = get_id(chain, data_len);
                data_written = status == VIRTIO_BLK_S_OK;
                break;
            default: status = VIRTIO_BLK_S_UNSUPP; break;
        }
    }
    // Used length (2.7.8.1) must not exceed what was written from the first writable byte on, so
    // a data area that the request did not fill (errors, OUT, FLUSH) is zeroed; this also keeps
    // half-read disk data from a failed IN away from the guest.
    ChainWriter area(chain, active_.memory());
    const bool area_written = data_written || write_zeros(area, data_len);
    ChainWriter tail(chain, active_.memory());
    const bool status_written = tail.skip(data_len) && tail.write_obj(status);
    const std::uint32_t len =
        area_written && status_written ? static_cast<std::uint32_t>(std::min<std::uint64_t>(writable, UINT32_MAX)) : 0;
    active_.queue(0)->add_used(chain.head(), len);
}

}  // namespace virtio
