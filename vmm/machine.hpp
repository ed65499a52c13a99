// vmm::Machine owns one running VM: guest RAM, the KVM VM and vCPUs, the GIC, the bus and every
// device, the device tree. The constructor builds it in boot order (one readable function);
// run() starts the vCPU threads, runs the event loop, and tears the threads down. A reset is
// served by destroying the Machine and building a fresh one (main.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "devices/fd_output.hpp"
#include "devices/gic_v3_node.hpp"
#include "devices/uart_16550.hpp"
#include "devices/virtio_mmio_node.hpp"
#include "virtio/console.hpp"
#include "virtio/device.hpp"
#include "virtio/device_events.hpp"
#include "virtio/device_handle.hpp"
#include "virtio/mmio_transport.hpp"
#include "vmm/base/bus.hpp"
#include "vmm/base/event_loop.hpp"
#include "vmm/base/guest_memory.hpp"
#include "vmm/config.hpp"
#include "vmm/control/server.hpp"
#include "vmm/control/vm_control.hpp"
#include "vmm/kvm/gic.hpp"
#include "vmm/kvm/irq.hpp"
#include "vmm/kvm/system.hpp"
#include "vmm/kvm/vcpu.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/vfio_setup.hpp"
#include "vmm/viommu_setup.hpp"

namespace vmm {

struct RunResult {
    enum class Reason { Shutdown, Reset, Crash, Signal, Error };
    Reason reason;
    std::string detail;  // Crash/Error: what happened
    int signal = 0;      // Signal: which one
};

// Built and run on the main thread; run() adds one thread per vCPU (see vcpu_loop.hpp) and
// uses the calling thread as the event loop. Devices document their own locking.
class Machine {
public:
    // Throws SetupError naming the failed step; a half-built Machine unwinds completely.
    Machine(const VmConfig& config, const kvm::System& kvm);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    const std::vector<std::uint8_t>& dtb() const { return dtb_; }

    // Boots the guest and returns when it powers off, resets or crashes, or a signal arrives.
    // With `control`, serves lkvm stop/stat/debug on it while running (`lkvm stop` ends the run
    // as Shutdown, "lkvm stop"). With `console_keys` (stdin is lkvm's raw terminal), console
    // input passes vmm/base/console_keys.hpp first: Ctrl-A x ends the run as Shutdown, "Ctrl-A x".
    RunResult run(const SignalFd& signals, const ControlSocket* control = nullptr, bool console_keys = false);

private:
    // One virtio-mmio slot. Members in dependency order: the doorbells go first on destruction,
    // the interrupt line the transport signals through goes last.
    struct VirtioSlot {
        std::unique_ptr<kvm::IrqfdLine> irq;
        std::unique_ptr<virtio::MmioTransport> transport;
        std::vector<std::unique_ptr<kvm::IoEventFd>> doorbells;  // index = queue
        devices::VirtioMmioNode node;
        std::string label;  // the control channel's name for it ("blk0", "rng", ...)
    };
    struct SlotOptions {
        std::string label{};
        // Queue kicks as ioeventfds served by the event loop; false: the kicking vCPU runs the
        // queue inline in its MMIO exit.
        bool doorbells = true;
        // Put the device behind the vIOMMU (when there is one and it covers virtio devices); the
        // virtio-iommu itself is not its own endpoint.
        bool behind_viommu = true;
    };

    // Puts `device` into the next virtio-mmio slot and returns that slot.
    VirtioSlot& add_virtio(std::unique_ptr<virtio::Device> device, SlotOptions options);
    void add_virtio_devices();
    // The event loop's host-side sources: the signals (`finish` the run, or a terminal resize)
    // and stdin (console input).
    void watch_host_input(EventLoop& loop, const SignalFd& signals, bool console_keys,
                          std::function<void(RunResult)> finish);
    // One slot served on the event loop: its doorbells and the device's own event sources.
    static std::unique_ptr<virtio::DeviceEvents> serve(EventLoop& loop, VirtioSlot& slot);
    void deliver_input(std::span<const std::uint8_t> bytes);
    void update_console_size();
    // What the control channel may reach (non-owning; valid while this Machine lives).
    VmControlParts control_parts(std::function<void()> stop);
    static std::optional<std::pair<std::uint16_t, std::uint16_t>> terminal_size();  // cols, rows of stdin's tty
    std::vector<std::uint8_t> build_device_tree(std::optional<GuestRange> initrd) const;

    const VmConfig config_;
    CpuFeatures cpu_features_;  // what the vCPUs were given (the DT describes the PMU)
    GuestMemory memory_;
    kvm::Vm vm_;
    std::vector<kvm::Vcpu> vcpus_;
    std::optional<kvm::Gic> gic_;
    devices::GicV3Node gic_node_;
    MmioBus bus_;
    devices::FdOutput serial_output_;  // the UART's: lkvm's stdout, or stderr (VmConfig::serial_to_stderr)
    kvm::SpiLevelLine uart_irq_;
    devices::Uart16550 uart_;
    // --vfio-pci: PCIe host bridge and assigned functions. Before the slots and the vIOMMU, which
    // hold its DMA mapper as their listener; ~Machine stops it first (no DMA, no mappings left).
    std::unique_ptr<VfioSetup> vfio_;
    std::vector<std::unique_ptr<VirtioSlot>> virtio_;
    // --viommu. After virtio_: destroyed first, so its fault path never outlives the slot it posts into.
    std::unique_ptr<ViommuSetup> viommu_;
    virtio::DeviceHandle<virtio::Console> console_;  // with --console virtio
    std::vector<std::uint8_t> dtb_;
};

}  // namespace vmm
