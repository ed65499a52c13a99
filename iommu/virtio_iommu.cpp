// iommu::VirtioIommu: virtio-iommu front end (virtio 1.2 section 5.13; what Linux does with used
// lengths and with the event queue: drivers/iommu/virtio-iommu.c).
#include "iommu/virtio_iommu.hpp"

#include <linux/virtio_ids.h>

#include <endian.h>

#include <bit>
#include <cstring>
#include <string>

#include "iommu/protocol.hpp"
#include "virtio/chain_io.hpp"
#include "virtio/features.hpp"
#include "virtio/queue.hpp"
#include "virtio/ring.hpp"
#include "vmm/base/error.hpp"

namespace iommu {

const std::uint64_t VirtioIommu::kSupportedFeatures =
    virtio::feature_bit(VIRTIO_IOMMU_F_INPUT_RANGE) | virtio::feature_bit(VIRTIO_IOMMU_F_DOMAIN_RANGE) |
    virtio::feature_bit(VIRTIO_IOMMU_F_MAP_UNMAP) | virtio::feature_bit(VIRTIO_IOMMU_F_PROBE) |
    virtio::feature_bit(VIRTIO_IOMMU_F_MMIO) | virtio::feature_bit(VIRTIO_IOMMU_F_BYPASS_CONFIG) |
    virtio::feature_bit(VIRTIO_RING_F_INDIRECT_DESC) | virtio::feature_bit(VIRTIO_RING_F_EVENT_IDX);

namespace {

void validate(const VirtioIommuConfig& config, const Iommu& iommu) {
    const Limits& limits = iommu.limits();
    if (config.tables && !iommu.can_walk_tables())
        throw vmm::SetupError("virtio-iommu: page-table handover needs the guest RAM to walk tables in");
    // CONFORMANCE.md D4
    const IovaWindow& window = config.window;
    if (window.page_size_mask == 0) throw vmm::SetupError("virtio-iommu: page_size_mask must not be 0");
    if (window.input_first > window.input_last) throw vmm::SetupError("virtio-iommu: empty input range");
    if (window.input_first & (window.granule() - 1))
        throw vmm::SetupError("virtio-iommu: input range start not aligned");
    if (config.domain_first > config.domain_last) throw vmm::SetupError("virtio-iommu: empty domain range");
    const std::uint64_t needed =
        limits.max_reserved_regions * protocol::kResvMemSize + (config.tables ? protocol::kTableFormatSize : 0);
    if (config.probe_size < needed || config.probe_size > 65536)
        throw vmm::SetupError("virtio-iommu: probe_size must be in [" + std::to_string(needed) + ", 65536]");
    for (std::uint16_t size : {config.request_queue_size, config.event_queue_size})
        if (size == 0 || size > virtio::Virtqueue::kMaxSize || !std::has_single_bit(size))
            throw vmm::SetupError("virtio-iommu: queue sizes must be powers of two up to 32768");
}

}  // namespace

VirtioIommu::VirtioIommu(std::shared_ptr<Iommu> iommu, const VirtioIommuConfig& config)
    : iommu_(std::move(iommu)),
      config_(config),
      offered_(config.features &
               (kSupportedFeatures | (config.tables ? virtio::feature_bit(LKVM_VIOMMU_F_ATTACH_TABLE) : 0))),
      bypass_(config.boot_bypass ? 1 : 0) {
    validate(config_, *iommu_);
    probe_buffer_.resize(std::size_t{config_.probe_size} + protocol::kTailSize);
    apply_bypass(bypass_);
}

VirtioIommu::~VirtioIommu() = default;

std::uint32_t VirtioIommu::device_id() const { return VIRTIO_ID_IOMMU; }

bool VirtioIommu::offered(unsigned bit) const { return virtio::has_feature(offered_, bit); }
bool VirtioIommu::negotiated(unsigned bit) const { return virtio::has_feature(negotiated_, bit); }

std::uint16_t VirtioIommu::queue_max_size(std::uint16_t queue) const {
    if (queue == kRequestQueue) return config_.request_queue_size;
    if (queue == kEventQueue) return config_.event_queue_size;
    return 0;
}

bool VirtioIommu::accept_features(std::uint64_t features) {
    // Any subset of what was offered works (CONFORMANCE.md G2); the transport already refused
    // unoffered bits.
    negotiated_ = features;
    Geometry geometry;
    geometry.window.page_size_mask = config_.window.page_size_mask;
    // A range feature the driver did not accept means the full range (5.13.4): the driver
    // cannot know our limits, so it is not held to them.
    if (negotiated(VIRTIO_IOMMU_F_INPUT_RANGE)) {
        geometry.window.input_first = config_.window.input_first;
        geometry.window.input_last = config_.window.input_last;
    }
    if (negotiated(VIRTIO_IOMMU_F_DOMAIN_RANGE)) {
        geometry.domain_first = config_.domain_first;
        geometry.domain_last = config_.domain_last;
    }
    geometry.map_flags = kMapRead | kMapWrite | (negotiated(VIRTIO_IOMMU_F_MMIO) ? kMapMmio : 0);
    geometry.attach_flags = negotiated(VIRTIO_IOMMU_F_BYPASS_CONFIG) ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
    iommu_->set_geometry(geometry);
    return true;
}

// ---- configuration space (5.13.4) ------------------------------------------------------------------

std::uint32_t VirtioIommu::config_size() const { return sizeof(virtio_iommu_config); }

void VirtioIommu::read_config(std::uint32_t offset, std::span<std::uint8_t> data) const {
    virtio_iommu_config config;
    std::memset(&config, 0, sizeof config);
    config.page_size_mask = htole64(config_.window.page_size_mask);
    // Fields of features not offered read as zero (they are not valid, 5.13.4).
    if (offered(VIRTIO_IOMMU_F_INPUT_RANGE)) {
        config.input_range.start = htole64(config_.window.input_first);
        config.input_range.end = htole64(config_.window.input_last);
    }
    if (offered(VIRTIO_IOMMU_F_DOMAIN_RANGE)) {
        config.domain_range.start = htole32(config_.domain_first);
        config.domain_range.end = htole32(config_.domain_last);
    }
    if (offered(VIRTIO_IOMMU_F_PROBE)) config.probe_size = htole32(config_.probe_size);
    if (offered(VIRTIO_IOMMU_F_BYPASS_CONFIG)) config.bypass = bypass_;
    if (offset >= sizeof config) return;
    const std::size_t length = std::min<std::size_t>(data.size(), sizeof config - offset);
    std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(&config) + offset, length);
}

void VirtioIommu::write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
    // Only `bypass` is driver-writable (virtio 1.2 5.13.4.1), with an 8-bit access, when
    // BYPASS_CONFIG was negotiated, and only 0 or 1 (CONFORMANCE.md D7: the device never presents
    // another value).
    const bool ok = offset == offsetof(virtio_iommu_config, bypass) && data.size() == 1 &&
                    negotiated(VIRTIO_IOMMU_F_BYPASS_CONFIG) && data[0] <= 1;
    if (!ok) {
        ++stats_.rejected_config_writes;
        vmm::guest_error(log_, "virtio-iommu: config write of %zu bytes at %u ignored", data.size(), offset);
        return;
    }
    apply_bypass(data[0]);
}

void VirtioIommu::apply_bypass(std::uint8_t value) {
    // 5.13.6.2: unattached endpoints bypass iff BYPASS_CONFIG is offered and bypass = 1,
    // even if the driver did not accept the feature (CONFORMANCE.md D13).
    // An external IOMMU that cannot follow (bypass needs guest RAM pinned) keeps its endpoint
    // blocked; the field still takes the value, as the other endpoints did.
    iommu_->set_unattached_bypass(offered(VIRTIO_IOMMU_F_BYPASS_CONFIG) && value == 1);
    bypass_ = value;
}

// ---- lifecycle -------------------------------------------------------------------------------------

// Either queue may be left disabled: requests or fault reports then go unserved.
bool VirtioIommu::activate(const virtio::Activation& activation) { return active_.activate(activation); }

void VirtioIommu::reset() {
    active_.reset();
    negotiated_ = 0;
    // CONFORMANCE.md D14 / G5: no endpoint stays attached, every domain dies; bypass is kept (D6).
    iommu_->reset();
    iommu_->set_geometry(Geometry{});
}

// ---- request queue (5.13.6) ------------------------------------------------------------------------

void VirtioIommu::notify(std::uint16_t queue) {
    // The eventq needs no kick: its buffers are taken when a fault happens (CONFORMANCE.md L10).
    virtio::Virtqueue* requestq = active_.queue(kRequestQueue);
    if (queue != kRequestQueue || !requestq) return;
    bool added = false;
    // CONFORMANCE.md L7: every request posted so far, in ring order. Bounded: an honest driver
    // never has more than a queue's worth outstanding per kick (Linux syncs before adding more).
    const std::uint32_t budget = 4u * requestq->size();
    for (std::uint32_t done = 0; done < budget;) {
        // The model's lock is taken once per chunk, not per request; chunks bound how long a
        // translating device thread can wait for it.
        Iommu::Batch batch(*iommu_);
        const std::uint32_t chunk_end = std::min(budget, done + kRequestsPerLock);
        for (; done < chunk_end; ++done) {
            std::optional<virtio::DescriptorChain> chain = requestq->pop();
            if (!chain) {
                done = budget;
                break;
            }
            const std::uint32_t used = process(*chain, batch);
            // The new state is in force before the driver sees the request complete; requests
            // complete inline, the guest vCPU is spinning for them (CONFORMANCE.md L8).
            requestq->add_used(chain->head(), used);
            added = true;
        }
    }
    if (added && requestq->needs_notification()) active_.context().signal_used(kRequestQueue);
}

Status VirtioIommu::execute_probe(EndpointId endpoint, std::span<std::uint8_t> area, Iommu::Batch& batch) {
    std::memset(area.data(), 0, area.size());
    if (!negotiated(VIRTIO_IOMMU_F_PROBE)) return Status::Unsupp;
    const std::vector<ResvRegion>* regions = batch.probe(endpoint);
    if (!regions) return Status::NoEnt;  // CONFORMANCE.md D42
    // CONFORMANCE.md D47: a properties area smaller than probe_size gets no property at all.
    if (area.size() < config_.probe_size) return Status::Inval;
    // CONFORMANCE.md D61: TABLE_FORMAT only to a driver that accepted the feature, for endpoints
    // that can use a table; D71: SHADOW for those behind a host IOMMU.
    std::optional<protocol::TableFormat> table;
    if (negotiated(LKVM_VIOMMU_F_ATTACH_TABLE) && batch.can_use_tables(endpoint))
        table = protocol::TableFormat{static_cast<std::uint8_t>(iommu_->table_output_bits()),
                                      batch.shadows_tables(endpoint)};
    return protocol::encode_probe_properties(*regions, area, table) ? Status::Ok : Status::Inval;
}

std::uint32_t VirtioIommu::process(const virtio::DescriptorChain& chain, Iommu::Batch& batch) {
    ++stats_.requests;
    const std::uint64_t writable = chain.writable_bytes();
    protocol::ReadableBytes readable{};
    const std::size_t copied =
        static_cast<std::size_t>(std::min<std::uint64_t>(chain.readable_bytes(), readable.size()));
    virtio::ChainReader reader(chain, active_.memory());
    // Copy first, validate the copy (the guest may rewrite the buffer meanwhile).
    const bool read_ok = reader.read({readable.data(), copied});
    protocol::Request request =
        read_ok ? protocol::parse_request(readable, chain.readable_bytes(), negotiated(LKVM_VIOMMU_F_ATTACH_TABLE))
                : protocol::Request{protocol::Unparsable{}};
    const std::uint8_t type = copied > 0 ? readable[0] : 0;
    const bool is_probe = type == VIRTIO_IOMMU_T_PROBE && !std::holds_alternative<protocol::Unparsable>(request);

    // CONFORMANCE.md D9 unknown type, D12 no head or no room for a tail, D43 PROBE without F_PROBE
    // offered: the buffer goes back unwritten with used length 0.
    if (std::holds_alternative<protocol::Unparsable>(request) || writable < protocol::kTailSize ||
        (is_probe && !offered(VIRTIO_IOMMU_F_PROBE))) {
        ++stats_.unanswered;
        vmm::guest_error(log_, "virtio-iommu: request of type %u (readable %llu, writable %llu) returned unwritten",
                         type, static_cast<unsigned long long>(chain.readable_bytes()),
                         static_cast<unsigned long long>(writable));
        return 0;
    }

    // PROBE answers probe_size bytes of properties then the tail (CONFORMANCE.md L3: used length
    // probe_size + 4, also on error). A smaller writable area gets its tail in its last 4 bytes
    // (5.13.6.2).
    std::span<std::uint8_t> area;
    if (is_probe) {
        const std::uint64_t room = writable - protocol::kTailSize;
        area = std::span<std::uint8_t>(probe_buffer_)
                   .first(static_cast<std::size_t>(std::min<std::uint64_t>(room, config_.probe_size)));
        std::memset(area.data(), 0, area.size());
    }

    Status status = Status::Inval;  // TooShort: the readable part misses fields
    if (const auto* attach = std::get_if<protocol::AttachRequest>(&request)) {
        if (!attach->reserved_zero) {  // CONFORMANCE.md D15
            status = Status::Inval;
            batch.count_endpoint_status(attach->endpoint, status);
        } else {
            status = batch.attach(attach->endpoint, attach->domain, attach->flags);
        }
    } else if (const auto* detach = std::get_if<protocol::DetachRequest>(&request)) {
        status = batch.detach(detach->endpoint, detach->domain);
    } else if (const auto* map = std::get_if<protocol::MapRequest>(&request)) {
        status = negotiated(VIRTIO_IOMMU_F_MAP_UNMAP)
                     ? batch.map(map->domain, map->virt_start, map->virt_end, map->phys_start, map->flags)
                     : Status::Unsupp;
        if (status != Status::Ok && status != Status::Unsupp) report_refused_map(*map, status, batch);
    } else if (const auto* unmap = std::get_if<protocol::UnmapRequest>(&request)) {
        status = negotiated(VIRTIO_IOMMU_F_MAP_UNMAP) ? batch.unmap(unmap->domain, unmap->virt_start, unmap->virt_end)
                                                      : Status::Unsupp;
    } else if (const auto* probe = std::get_if<protocol::ProbeRequest>(&request)) {
        status = execute_probe(probe->endpoint, area, batch);
        batch.count_endpoint_status(probe->endpoint, status);
    } else if (const auto* attach_table = std::get_if<protocol::AttachTableRequest>(&request)) {
        // CONFORMANCE.md D62: fields first (validated once, by the parser).
        status = attach_table->fields == Status::Ok
                     ? batch.attach_table(attach_table->endpoint, attach_table->domain, attach_table->table)
                     : attach_table->fields;
        if (attach_table->fields != Status::Ok) batch.count_endpoint_status(attach_table->endpoint, status);
    } else if (const auto* invalidate = std::get_if<protocol::InvalidateRequest>(&request)) {
        status = invalidate->fields == Status::Ok ? batch.invalidate(invalidate->domain, invalidate->what)
                                                  : invalidate->fields;  // CONFORMANCE.md D66
        // CONFORMANCE.md D73: a run the host refused is also a fault record (our driver reads no
        // status of the INVALIDATEs that follow unmaps).
        if (status != Status::Ok && invalidate->fields == Status::Ok && batch.refused_run()) {
            const RefusedRun& refused = *batch.refused_run();
            report_refusal(
                Fault{refused.endpoint, FaultReason::Mapping, Access::Read, refused.run.first.value, refused.run.flags},
                "INVALIDATE", invalidate->domain, status);
        }
    }
    ++stats_.statuses[static_cast<std::size_t>(status)];
    if (type < stats_.requests_by_type.size()) ++stats_.requests_by_type[type];

    const virtio_iommu_req_tail tail = protocol::make_tail(status);
    virtio::ChainWriter writer(chain, active_.memory());
    if (!area.empty()) writer.write(area);
    writer.write_obj(tail);
    // Exactly what was written: 4, or area + 4 for PROBE (0 if the buffer was unreachable).
    return writer.failed() ? 0 : writer.bytes_written();
}

// ---- event queue (5.13.6.9) ---------------------------------------------------------------------

void VirtioIommu::report_refused_map(const protocol::MapRequest& map, Status status, const Iommu::Batch& batch) {
    // The status stays what virtio 1.2 5.13.6.5 asks (older drivers read it); the record is for
    // drivers that queue MAPs without reading their status (Linux 6.8 and later), which would
    // otherwise believe the mapping exists and see their device's DMA fail with no reason given.
    const std::optional<EndpointId> endpoint = batch.refused_map_endpoint();
    if (!endpoint) return;  // no such domain: no endpoint to name
    report_refusal(Fault{*endpoint, FaultReason::Mapping, Access::Read, map.virt_start, map.flags}, "MAP", map.domain,
                   status);
}

void VirtioIommu::report_refusal(const Fault& fault, const char* request, DomainId domain, Status status) {
    ++stats_.map_refusals;
    if (!refusal_reports_.allow()) {
        ++stats_.refusals_rate_limited;
        return;
    }
    if (post_fault(fault)) {
        ++stats_.refusals_reported;
        vmm::log_debug("virtio-iommu: %s of domain %u at IOVA %#llx answered %s, reported as a fault of endpoint %u",
                       request, domain, static_cast<unsigned long long>(fault.address), status_name(status),
                       fault.endpoint);
    } else {
        ++stats_.refusals_no_buffer;
    }
}

bool VirtioIommu::post_fault(const Fault& fault) {
    virtio::Virtqueue* eventq = active_.queue(kEventQueue);
    if (!eventq) {
        ++stats_.faults_dropped;
        return false;
    }
    const virtio_iommu_fault report = protocol::encode_fault(fault);
    // Skip (return unwritten) buffers too small for a report: CONFORMANCE.md D58 forbids spreading
    // a report over several buffers. Bounded by the queue size.
    for (std::uint32_t n = 0; n < eventq->size(); ++n) {
        std::optional<virtio::DescriptorChain> chain = eventq->pop();
        if (!chain) break;
        if (chain->writable_bytes() < sizeof report) {
            ++stats_.bad_event_buffers;
            vmm::guest_error(log_, "virtio-iommu: event buffer of %llu bytes is too small",
                             static_cast<unsigned long long>(chain->writable_bytes()));
            eventq->add_used(chain->head(), 0);
            continue;
        }
        virtio::ChainWriter writer(*chain, active_.memory());
        writer.write_obj(report);
        eventq->add_used(chain->head(), writer.failed() ? 0 : writer.bytes_written());
        ++stats_.faults_posted;
        if (eventq->needs_notification()) active_.context().signal_used(kEventQueue);
        return true;
    }
    // CONFORMANCE.md D59: no buffer: drop (never block the faulting device) and count.
    ++stats_.faults_dropped;
    if (eventq->needs_notification()) active_.context().signal_used(kEventQueue);
    return false;
}

// ---- wiring helpers --------------------------------------------------------------------------------

FaultForwarder::FaultForwarder(std::shared_ptr<Iommu> iommu, virtio::MmioTransport& transport, VirtioIommu& device)
    : iommu_(std::move(iommu)), transport_(transport), device_(device) {
    iommu_->set_fault_sink(this);
}

FaultForwarder::~FaultForwarder() { iommu_->set_fault_sink(nullptr); }

void FaultForwarder::report_fault(const Fault& fault) {
    transport_.with_device([&](virtio::Device&) { device_.post_fault(fault); });
}

}  // namespace iommu
