#include "vmm/viommu_setup.hpp"

#include <cinttypes>
#include <cstdio>

#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"
#include "vmm/base/log.hpp"

namespace vmm {

iommu::VirtioIommuConfig device_config(const ViommuConfig& config) {
    iommu::VirtioIommuConfig d;
    d.window = config.window;
    d.boot_bypass = config.boot_bypass;
    d.tables = config.tables;
    return d;
}

ViommuSetup::ViommuSetup(const ViommuConfig& config, const GuestMemory& ram)
    : config_(config),
      iommu_(std::make_shared<iommu::Iommu>(iommu::Limits{}, &ram)),
      owned_device_(std::make_unique<iommu::VirtioIommu>(iommu_, device_config(config))),
      device_(owned_device_.get()) {}

// forwarder_ goes first (declared last): it unregisters from the model while the transport it
// posts into still exists.
ViommuSetup::~ViommuSetup() = default;

std::unique_ptr<virtio::Device> ViommuSetup::take_device() {
    if (!owned_device_) throw SetupError("virtio-iommu: device already placed");
    return std::move(owned_device_);
}

void ViommuSetup::connect(virtio::MmioTransport& transport, devices::VirtioMmioNode& node) {
    transport_ = &transport;
    node.set_is_iommu(true);
    forwarder_ = std::make_unique<iommu::FaultForwarder>(iommu_, transport, *device_);
    if (config_.poll_us > 0)
        poller_ = std::make_unique<virtio::QueuePoller>(transport, iommu::VirtioIommu::kRequestQueue,
                                                        std::chrono::microseconds(config_.poll_us));
    log_debug("vIOMMU: %s", describe(config_).c_str());
}

void ViommuSetup::stop_polling() {
    if (poller_) poller_->stop();
}

std::optional<iommu::EndpointId> ViommuSetup::add_virtio_endpoint(unsigned slot, virtio::MmioTransport& transport,
                                                                  devices::VirtioMmioNode& node) {
    if (!config_.virtio) return std::nullopt;
    const iommu::EndpointId id = layout::virtio_mmio_endpoint(slot);
    iommu_->add_endpoint(iommu::EndpointConfig{id, {}, nullptr});
    // The one place an emulated device's DMA is put behind translation: the transport hands the
    // queues and the device a translated DmaMemory iff the driver accepts ACCESS_PLATFORM.
    transport.place_behind_iommu(iommu_->translator(id));
    node.set_iommu_endpoint(id);
    log_debug("vIOMMU: virtio-mmio slot %u (%.*s) is endpoint 0x%" PRIx32, slot,
              static_cast<int>(transport.name().size()), transport.name().data(), id);
    return id;
}

std::string ViommuSetup::dump() const {
    std::string out = "vIOMMU (" + describe(config_) + ")\n";
    if (transport_ && device_) {
        iommu::VirtioIommuStats s = transport_->with_device([&](virtio::Device&) { return device_->stats(); });
        char line[160];
        std::snprintf(line, sizeof line,
                      "virtio-iommu: %" PRIu64 " requests, %" PRIu64 " unanswered, %" PRIu64 " faults posted, %" PRIu64
                      " dropped\n",
                      s.requests, s.unanswered, s.faults_posted, s.faults_dropped);
        out += line;
    }
    if (poller_) {
        const virtio::QueuePollerStats p = poller_->stats();
        char line[256];
        std::snprintf(line, sizeof line,
                      "request-queue poller: %" PRIu64 " kicks, %" PRIu64 " wake-ups, %" PRIu64
                      " batches served without a kick, %" PRIu64 " found after re-enabling kicks, %" PRIu64
                      " polls, window %" PRIu64 " us\n",
                      p.kicks, p.wakeups, p.processed, p.late_arrivals, p.polls, p.window_ns / 1000);
        out += line;
    }
    return out + iommu_->dump();
}

}  // namespace vmm
