// iommu::VirtioIommu: the virtio-iommu device (virtio 1.2 section 5.13, device ID 23) as a
// virtio::Device on any transport: features, configuration space, the request queue (requests
// in ring order, exact status and used lengths) and fault reports on the event queue.
//
// Locking. The transport's lock guards this object: every virtio::Device call arrives with it held,
// and so must post_fault() / stats() (use transport.with_device(), as
// FaultForwarder does). A translation fault happens on the faulting endpoint's thread (a blk
// worker, holding *its* transport lock): the Iommu finds the fault under its shared lock, drops
// that lock, then calls the FaultSink, which takes this device's transport lock and posts the
// report into a buffer the driver put on the eventq without a kick (CONFORMANCE.md L10). Lock order
// is thus endpoint transport -> virtio-iommu transport, and the Iommu lock is never held while
// waiting for a transport lock. The request path takes virtio-iommu transport -> Iommu lock, which
// cannot wait on a faulting thread because faulting threads release the Iommu lock first. No event
// is ever queued: with no buffer posted the report is dropped and counted (CONFORMANCE.md D59).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>

#include "iommu/iommu.hpp"
#include "iommu/protocol.hpp"
#include "virtio/active_queues.hpp"
#include "virtio/device.hpp"
#include "virtio/mmio_transport.hpp"
#include "vmm/base/log.hpp"

namespace virtio {
class DescriptorChain;
}

namespace iommu {

struct VirtioIommuConfig {
    // Granule (CONFORMANCE.md L2): at most the guest page size; for VFIO endpoints at least the
    // host VFIO page size. Every instance of a VM must use the same mask (CONFORMANCE.md L14).
    IovaWindow window;
    std::uint32_t domain_first = 0;
    std::uint32_t domain_last = ~std::uint32_t{0};
    std::uint32_t probe_size = 512;
    // Initial (and VM-reset) value of config.bypass: unattached endpoints bypass until the driver
    // attaches them (CONFORMANCE.md D5, L11).
    bool boot_bypass = true;
    // Device features to offer, intersected with kSupportedFeatures (to switch features off).
    std::uint64_t features = ~std::uint64_t{0};
    // Page-table handover (iommu/page_tables.md, --viommu tables=on): also offer
    // LKVM_VIOMMU_F_ATTACH_TABLE. Needs an Iommu that can walk tables (given guest RAM).
    bool tables = false;
    std::uint16_t request_queue_size = 256;
    std::uint16_t event_queue_size = 64;
};

// Request types counted by VirtioIommuStats::requests_by_type: ATTACH (1) .. INVALIDATE (7).
inline constexpr std::size_t kRequestTypeCount = 8;

struct VirtioIommuStats {
    std::uint64_t requests = 0;
    // Answered requests by type (index = the type byte; unknown types are in `unanswered`), so
    // that e.g. MAPs per MiB of I/O follow from two snapshots.
    std::array<std::uint64_t, kRequestTypeCount> requests_by_type{};
    StatusCounts statuses{};
    std::uint64_t unanswered = 0;  // returned with used length 0 (unknown type, no tail room, ...)
    std::uint64_t faults_posted = 0;
    std::uint64_t faults_dropped = 0;     // no event buffer posted, or the device not running
    std::uint64_t bad_event_buffers = 0;  // eventq buffers too small for a report (CONFORMANCE.md D58)
    std::uint64_t rejected_config_writes = 0;
    // MAPs answered with an error, and INVALIDATEs whose shadowed run the host refused
    // (iommu/page_tables.md, "Shadowed endpoints"), each reported as a MAPPING fault on the eventq
    // (guests since Linux 6.8 do not read a MAP's status): reported, skipped by the rate limit, or
    // dropped for lack of an event buffer. map_refusals = reported + rate_limited + no_buffer.
    std::uint64_t map_refusals = 0;
    std::uint64_t refusals_reported = 0, refusals_rate_limited = 0, refusals_no_buffer = 0;
};

class VirtioIommu final : public virtio::Device {
public:
    static constexpr std::uint16_t kRequestQueue = 0;
    static constexpr std::uint16_t kEventQueue = 1;
    // Requests handled under one hold of the model's lock (see notify()).
    static constexpr std::uint32_t kRequestsPerLock = 64;
    // Offered device and ring features; never the legacy F_BYPASS (CONFORMANCE.md D2, D3).
    // LKVM_VIOMMU_F_ATTACH_TABLE only with config.tables (CONFORMANCE.md D60).
    static const std::uint64_t kSupportedFeatures;

    // Throws vmm::SetupError for an invalid config (CONFORMANCE.md D4 page_size_mask == 0, empty
    // ranges, a probe_size too small for the Iommu's reserved-region limit, bad queue sizes).
    VirtioIommu(std::shared_ptr<Iommu> iommu, const VirtioIommuConfig& config);
    ~VirtioIommu() override;

    // ---- virtio::Device
    std::string_view name() const override { return "virtio-iommu"; }
    std::uint32_t device_id() const override;
    std::uint64_t device_features() const override { return offered_; }
    bool accept_features(std::uint64_t features) override;
    std::uint16_t queue_count() const override { return 2; }
    std::uint16_t queue_max_size(std::uint16_t queue) const override;
    std::uint32_t config_size() const override;
    void read_config(std::uint32_t offset, std::span<std::uint8_t> data) const override;
    void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) override;
    bool activate(const virtio::Activation& activation) override;
    void reset() override;
    void notify(std::uint16_t queue) override;

    // ---- host side (transport lock held)
    // Posts a fault report into the next eventq buffer, or drops it (counted); true if posted.
    bool post_fault(const Fault& fault);
    VirtioIommuStats stats() const { return stats_; }
    std::uint8_t bypass() const { return bypass_; }
    const std::shared_ptr<Iommu>& model() const { return iommu_; }

private:
    bool negotiated(unsigned bit) const;
    bool offered(unsigned bit) const;
    void apply_bypass(std::uint8_t value);
    // Handles one request chain; returns the used length.
    std::uint32_t process(const virtio::DescriptorChain& chain, Iommu::Batch& batch);
    Status execute_probe(EndpointId endpoint, std::span<std::uint8_t> area, Iommu::Batch& batch);
    // A MAP answered `status` != OK: also a fault record for the guest, rate-limited.
    void report_refused_map(const protocol::MapRequest& map, Status status, const Iommu::Batch& batch);
    // The fault record of a refused MAP or shadowed run (`request` names it in the debug log).
    void report_refusal(const Fault& fault, const char* request, DomainId domain, Status status);

    std::shared_ptr<Iommu> iommu_;
    const VirtioIommuConfig config_;
    const std::uint64_t offered_;
    std::uint8_t bypass_;
    std::uint64_t negotiated_ = 0;

    virtio::ActiveQueues active_;

    std::vector<std::uint8_t> probe_buffer_;  // probe_size + tail, reused
    VirtioIommuStats stats_;
    vmm::RateLimiter log_;
    // Refused-MAP fault records: a burst of 10 per second at most, so that a flood of refusals
    // (a guest mapping far past its budget) cannot take every event buffer.
    vmm::RateLimiter refusal_reports_{10, std::chrono::seconds(1)};
};

// Wires an Iommu's faults to the eventq of the VirtioIommu inside `transport`. Register it after
// creating the transport and destroy it before the transport (declare it after): it unregisters
// itself, so no fault is delivered to a device that is gone. Thread-safe.
class FaultForwarder final : public FaultSink {
public:
    FaultForwarder(std::shared_ptr<Iommu> iommu, virtio::MmioTransport& transport, VirtioIommu& device);
    ~FaultForwarder();
    FaultForwarder(const FaultForwarder&) = delete;
    FaultForwarder& operator=(const FaultForwarder&) = delete;

    void report_fault(const Fault& fault) override;

private:
    std::shared_ptr<Iommu> iommu_;
    virtio::MmioTransport& transport_;
    VirtioIommu& device_;
};

}  // namespace iommu
