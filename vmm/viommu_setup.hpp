// vmm::ViommuSetup: the machine's `--viommu` — one iommu::Iommu model, its virtio-iommu device in
// the first virtio-mmio slot, and the emulated virtio-mmio devices registered behind it as
// endpoints. The machine does three calls (take_device, connect, add_virtio_endpoint per slot);
// everything else about the vIOMMU lives here.
//
// Endpoint IDs (stable, also in vmm/base/layout.hpp and the README): virtio-mmio slot i is endpoint
// 0x10000 + i (layout::virtio_mmio_endpoint); slot 0 is the virtio-iommu itself and no endpoint.
// IDs 0x0000-0xffff are left for PCI requester IDs (iommu-map,
// Documentation/devicetree/bindings/pci/pci-iommu.txt).
//
// Lifetime: built before the slots and destroyed before them (the Machine declares it after its
// slots), so the FaultForwarder unregisters before the transport it posts into goes away. A VM
// reset rebuilds the Machine, hence a new model with config.bypass back at its boot value
// (CONFORMANCE.md D6).
//
// Threads and locks: see iommu/virtio_iommu.hpp "Locking". A blk request that faults on the
// event-loop thread holds its own transport lock, then the FaultForwarder takes the
// virtio-iommu's transport lock (endpoint -> viommu, never the reverse: the viommu request path
// takes only the Iommu lock, which faulting threads release before reporting). With poll=US the
// request queue is also served by a QueuePoller thread owned here (virtio/queue_poller.hpp); it
// goes through the transport lock like a kicking vCPU, so that order is unchanged.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "devices/virtio_mmio_node.hpp"
#include "iommu/iommu.hpp"
#include "iommu/virtio_iommu.hpp"
#include "virtio/device.hpp"
#include "virtio/device_handle.hpp"
#include "virtio/mmio_transport.hpp"
#include "virtio/queue_poller.hpp"
#include "vmm/viommu_config.hpp"

namespace vmm {

// The virtio-iommu device configuration for a --viommu configuration.
iommu::VirtioIommuConfig device_config(const ViommuConfig& config);

class ViommuSetup {
public:
    // Throws SetupError for a configuration the device rejects (validate() catches those first).
    // `ram` is where table-mode domains' tables live (tables=on); it must outlive the setup and
    // every device behind it (the Machine owns it and declares it first).
    ViommuSetup(const ViommuConfig& config, const GuestMemory& ram);
    ~ViommuSetup();
    ViommuSetup(const ViommuSetup&) = delete;
    ViommuSetup& operator=(const ViommuSetup&) = delete;

    // The virtio-iommu device, for the caller to put behind a transport (once).
    std::unique_ptr<virtio::Device> take_device();
    // The transport and DT node the device went into: the node becomes the IOMMU
    // (#iommu-cells = <1>, phandle) and translation faults reach the device's eventq. With
    // poll=US > 0 this starts the request-queue poller thread (asleep until the first kick).
    void connect(virtio::MmioTransport& transport, devices::VirtioMmioNode& node);
    // Stops and joins the poller (idempotent; the destructor does it too). The machine calls it
    // first at teardown, so no request is in flight while other devices stop.
    void stop_polling();

    // Puts the emulated device in virtio-mmio slot `slot` behind the vIOMMU when the
    // configuration covers virtio devices: registers the endpoint, offers ACCESS_PLATFORM through
    // `transport` (DMA translated iff negotiated, virtio 1.2 6.1) and writes `iommus` into `node`.
    // Returns the endpoint ID, or nothing when the device stays untranslated.
    std::optional<iommu::EndpointId> add_virtio_endpoint(unsigned slot, virtio::MmioTransport& transport,
                                                         devices::VirtioMmioNode& node);

    const ViommuConfig& config() const { return config_; }
    // The model, for other endpoint kinds (VFIO functions register with a MapListener).
    const std::shared_ptr<iommu::Iommu>& model() const { return iommu_; }
    // The virtio-iommu in its transport, once connected (for the control channel).
    virtio::DeviceHandle<iommu::VirtioIommu> device() const {
        return transport_ ? virtio::DeviceHandle<iommu::VirtioIommu>(*transport_, *device_)
                          : virtio::DeviceHandle<iommu::VirtioIommu>();
    }
    // Counters and mappings (for --debug at exit and for the control channel).
    std::string dump() const;

private:
    const ViommuConfig config_;
    std::shared_ptr<iommu::Iommu> iommu_;
    std::unique_ptr<iommu::VirtioIommu> owned_device_;  // until take_device()
    iommu::VirtioIommu* device_ = nullptr;
    virtio::MmioTransport* transport_ = nullptr;
    std::unique_ptr<iommu::FaultForwarder> forwarder_;
    // Last: stopped and joined first, while the transport it polls and the forwarder exist.
    std::unique_ptr<virtio::QueuePoller> poller_;
};

}  // namespace vmm
