#include "vmm/machine.hpp"

#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "devices/net/slirp_backend.hpp"
#include "devices/net/tap_backend.hpp"
#include "devices/p9/server.hpp"
#include "fdt/machine_tree.hpp"
#include "virtio/blk.hpp"
#include "virtio/block_backend.hpp"
#include "virtio/console.hpp"
#include "virtio/net.hpp"
#include "virtio/p9.hpp"
#include "virtio/rng.hpp"
#include "vmm/base/console_keys.hpp"
#include "vmm/base/descriptor_limit.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/layout.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/terminal.hpp"
#include "vmm/kernel_loader.hpp"
#include "vmm/kvm/vcpu_loop.hpp"

namespace vmm {
namespace {

// Fewer fids per share than this and a guest can do little more than mount: lkvm says so.
constexpr std::uint32_t kFewFids = 64;

std::vector<GuestRange> ram_ranges(const VmConfig& config) {
    auto ram = layout::ram(config.mem_mib * layout::kMiB);  // validate() checked the size
    if (!ram) throw SetupError("-m/--mem " + std::to_string(config.mem_mib) + " does not fit the memory map");
    return {*ram};
}

std::vector<std::uint8_t> random_seed() {
    std::vector<std::uint8_t> seed(64);
    if (::getrandom(seed.data(), seed.size(), GRND_NONBLOCK) != static_cast<ssize_t>(seed.size())) seed.clear();
    return seed;
}

}  // namespace

Machine::Machine(const VmConfig& config, const kvm::System& kvm)
    : config_(config),
      memory_(ram_ranges(config)),
      vm_(kvm.create_vm(layout::ipa_bits_for(memory_.total_size(), !config.vfio_pci.empty()))),
      gic_node_(layout::kGicDist, layout::gic_redistributors(config.cpus), layout::kGicIts),
      serial_output_(config.serial_to_stderr ? STDERR_FILENO : STDOUT_FILENO),
      uart_irq_(vm_, layout::kUartSpi),
      uart_(layout::kUart, layout::kUartSpi, layout::kUartClockHz, uart_irq_, serial_output_) {
    const auto started = std::chrono::steady_clock::now();
    auto elapsed_ms = [&] {
        return static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
    };
    // 1. Guest RAM (allocated above, touched lazily) becomes KVM memory slot 0.
    const GuestMemory::Region& ram = memory_.regions().front();
    vm_.add_memory(0, ram.range, ram.host);
    log_debug("RAM: %" PRIu64 " MiB at 0x%" PRIx64 ", %u-bit IPA", ram.range.size() >> 20, ram.range.base().value,
              layout::ipa_bits_for(ram.range.size(), !config_.vfio_pci.empty()));

    // 2. vCPUs: vCPU 0 boots the kernel, the others wait for PSCI CPU_ON. Pointer authentication
    //    and SVE when KVM has them, the PMU with --pmu (vmm/cpu_features.hpp).
    const CpuCaps caps = kvm.limits().cpu;
    cpu_features_ = select_cpu_features(caps, config_.cpu);
    log_debug("%s", describe(cpu_features_, caps, config_.cpu).c_str());
    vcpus_.reserve(config_.cpus);
    for (unsigned i = 0; i < config_.cpus; ++i) vcpus_.push_back(vm_.create_vcpu(i, cpu_features_));

    // 3. GICv3 + ITS (after the vCPUs: its initialization sizes the redistributors), then the
    //    PMU, whose initialization needs the initialized vGIC (Documentation/virt/kvm/devices/vcpu.rst).
    gic_.emplace(vm_, config_.cpus);
    if (cpu_features_.pmu)
        for (kvm::Vcpu& vcpu : vcpus_) vcpu.init_pmu(kPmuPpi);

    // 4. The UART: boot console (earlycon) and ttyS0.
    bus_.add(layout::kUart, uart_, "uart");

    // 5. PCIe host bridge and assigned functions (--vfio-pci): opened, reset, BARs placed; without
    //    a vIOMMU all guest RAM is mapped for their DMA now (vmm/vfio_setup.hpp).
    const bool vfio_behind_viommu = config_.viommu && config_.viommu->vfio;
    if (!config_.vfio_pci.empty()) {
        vfio_ = std::make_unique<VfioSetup>(vm_, memory_, config_.vfio_pci, vfio_behind_viommu);
        vfio_->add_to_bus(bus_);
    }

    // 6. vIOMMU (--viommu): the virtio-iommu takes the first virtio-mmio slot, so it probes
    //    before its endpoints; every later slot is put behind it (vmm/viommu_setup.hpp), and the
    //    assigned functions with --viommu vfio (their host IOMMU bounds page sizes and IOVAs).
    if (config_.viommu) {
        ViommuConfig viommu_config = *config_.viommu;
        if (vfio_ && vfio_behind_viommu) viommu_config.window = vfio_->narrow(viommu_config.window, kViommuMaxGranule);
        auto viommu = std::make_unique<ViommuSetup>(viommu_config, memory_);
        // No ioeventfd: Linux busy-polls each MAP/UNMAP sync with IRQs off (CONFORMANCE.md L8), so
        // the kicking vCPU serves the request itself rather than wait for the event-loop thread;
        // with poll=US a poller thread (started by connect()) serves the requests after that kick
        // with the guest's kicks suppressed.
        VirtioSlot& slot =
            add_virtio(viommu->take_device(), {.label = "iommu", .doorbells = false, .behind_viommu = false});
        viommu->connect(*slot.transport, slot.node);
        viommu_ = std::move(viommu);
        if (vfio_ && vfio_behind_viommu) vfio_->add_endpoints(*viommu_->model(), viommu_config.window);
    }
    // 7. virtio devices, one virtio-mmio slot each: disks in command-line order, rng, console.
    add_virtio_devices();

    // 8. Kernel and initrd, read straight into guest RAM.
    BootFile kernel = BootFile::open(config_.kernel, "kernel");
    std::optional<BootFile> initrd;
    if (!config_.initrd.empty()) initrd.emplace(BootFile::open(config_.initrd, "initrd"));
    BootPlan plan = plan_boot(ram.range, kernel.image_header(), kernel.size(),
                              initrd ? std::optional<std::uint64_t>(initrd->size()) : std::nullopt);
    kernel.load(memory_, plan.kernel.base());
    if (initrd) initrd->load(memory_, plan.initrd->base());
    log_debug("kernel at 0x%" PRIx64 " (%" PRIu64 " bytes reserved), DTB at 0x%" PRIx64 "; loaded at +%lld ms",
              plan.kernel.base().value, plan.kernel.size(), plan.dtb.base().value, elapsed_ms());

    // 9. The device tree, from what was built above.
    dtb_ = build_device_tree(plan.initrd);
    if (dtb_.size() > plan.dtb.size() || !memory_.write(plan.dtb.base(), dtb_))
        throw SetupError("the device tree (" + std::to_string(dtb_.size()) + " bytes) does not fit its 2 MiB slot");

    // 10. Boot registers (booting.rst): x0 = DTB, x1..x3 = 0 (KVM_ARM_VCPU_INIT zeroed them), pc = entry.
    vcpus_[0].set_x(0, plan.dtb.base().value);
    vcpus_[0].set_pc(plan.kernel.base().value);
    log_debug("machine built in %lld ms", elapsed_ms());
}

Machine::~Machine() {
    // The vIOMMU's request-queue poller first (no request in flight, no thread left), then
    // assigned devices (no more DMA), then their mappings go, before anything they could reach
    // (the vIOMMU, guest RAM) is torn down.
    if (viommu_) viommu_->stop_polling();
    if (vfio_) vfio_->stop();
    if (viommu_ && config_.debug) log_debug("%s", viommu_->dump().c_str());
}

Machine::VirtioSlot& Machine::add_virtio(std::unique_ptr<virtio::Device> device, SlotOptions options) {
    const unsigned index = static_cast<unsigned>(virtio_.size());
    if (index >= layout::kVirtioMmioSlots) throw SetupError("too many virtio devices");
    const GuestRange window = layout::virtio_mmio_slot(index);
    const std::uint32_t spi = layout::virtio_mmio_spi(index);
    const std::string name(device->name());

    auto irq = std::make_unique<kvm::IrqfdLine>(vm_, spi);
    auto transport = std::make_unique<virtio::MmioTransport>(std::move(device), *irq, memory_);
    auto slot = std::make_unique<VirtioSlot>(VirtioSlot{.irq = std::move(irq),
                                                        .transport = std::move(transport),
                                                        .doorbells = {},
                                                        .node = {window, spi},
                                                        .label = std::move(options.label)});
    if (viommu_ && options.behind_viommu) viommu_->add_virtio_endpoint(index, *slot->transport, slot->node);
    // Queue kicks bypass the vCPU exit path: KVM signals an eventfd per queue (datamatch = index).
    const GuestPhysAddr notify{window.base().value + virtio::MmioTransport::queue_notify_offset()};
    for (std::uint16_t q = 0; options.doorbells && q < slot->transport->queue_count(); ++q)
        slot->doorbells.push_back(std::make_unique<kvm::IoEventFd>(vm_, notify, 4, q));
    bus_.add(window, *slot->transport, "virtio-" + name);
    log_debug("virtio-mmio slot %u: %s at 0x%" PRIx64 ", SPI %u, %u queues", index, name.c_str(), window.base().value,
              spi, slot->transport->queue_count());
    virtio_.push_back(std::move(slot));
    return *virtio_.back();
}

std::vector<std::uint8_t> Machine::build_device_tree(std::optional<GuestRange> initrd) const {
    fdt::MachineDescription m{.ram = memory_.regions().front().range,
                              .cpu_mpidrs = {},
                              .bootargs = kernel_params(config_),
                              .initrd = initrd,
                              .stdout_path = "",
                              .rng_seed = random_seed(),
                              .devices = {},
                              .pmu_ppi = std::nullopt};
    if (cpu_features_.pmu) m.pmu_ppi = kPmuPpi;
    for (const kvm::Vcpu& vcpu : vcpus_) m.cpu_mpidrs.push_back(vcpu.mpidr());
    // earlycon with no arguments and the kernel's default console both follow stdout-path.
    char path[32];
    std::snprintf(path, sizeof path, "/serial@%" PRIx64, layout::kUartBase);
    m.stdout_path = path;
    m.devices.push_back(&gic_node_);
    m.devices.push_back(&uart_);
    for (const auto& slot : virtio_) m.devices.push_back(&slot->node);
    if (vfio_) m.devices.push_back(&vfio_->fdt_node());
    return fdt::build_machine_tree(m);
}

// Slots in a fixed order: the disks as given (vda, vdb, ...), the --9p shares as given, the NICs as
// given (eth0, ...), then the rng, then the console.
void Machine::add_virtio_devices() {
    for (std::size_t i = 0; i < config_.disks.size(); ++i) {
        const DiskConfig& disk = config_.disks[i];
        virtio::BlkOptions options;
        options.read_only = disk.read_only;
        options.serial = "lkvm-disk" + std::to_string(i);
        add_virtio(std::make_unique<virtio::Blk>(virtio::FileBackend::open(disk.path, disk.read_only), options),
                   {.label = "blk" + std::to_string(i)});
    }
    static_assert(kMaxShareTag <= virtio::P9::kMaxTagLength);
    // Each share's fids within what the descriptor limit (raised by main) leaves after lkvm's
    // own reserve: a guest meets EMFILE before lkvm's eventfd(), socket() or accept() fail.
    const std::uint64_t limit = descriptor_limit();
    const std::uint32_t fids = devices::p9::fid_limit(descriptors_for_guests(limit), config_.shares.size());
    if (!config_.shares.empty() && fids < kFewFids) {
        if (fids == 0)
            throw SetupError("--9p: the descriptor limit (" + std::to_string(limit) +
                             ") leaves 9p no descriptors; raise it (ulimit -Hn) above " +
                             std::to_string(kReservedDescriptors +
                                            kFewFids * devices::p9::kDescriptorsPerFid * config_.shares.size()));
        log_warn("--9p: the descriptor limit (%llu) leaves each share %u fids; raise it (ulimit -Hn) for more",
                 static_cast<unsigned long long>(limit), fids);
    }
    for (const ShareConfig& share : config_.shares) {
        devices::p9::ServerOptions options;
        options.read_only = share.read_only;
        options.writable_file = share.writable_file;
        options.writable_limit = share.writable_limit;
        options.max_attaches = share.max_attaches;
        options.allow_setid = share.allow_setid;
        options.one_file_system = share.one_file_system;
        options.max_fids = fids;
        add_virtio(std::make_unique<virtio::P9>(devices::p9::Server::open(share.dir, options), share.tag),
                   {.label = "9p:" + share.tag});
    }
    for (std::size_t i = 0, nic = 0; i < config_.nets.size(); ++i) {
        const NetConfig& net = config_.nets[i];
        if (net.mode == NetMode::None) continue;
        std::unique_ptr<virtio::NetBackend> backend;
        if (net.mode == NetMode::User) backend = std::make_unique<devices::net::SlirpBackend>(slirp_options(net));
        else backend = std::make_unique<devices::net::TapBackend>(tap_options(net));
        virtio::NetOptions options;
        options.mac = nic_mac(net, static_cast<unsigned>(nic));
        log_debug("net%zu: %s, mac %s", nic, backend->describe().c_str(), format_mac(options.mac).c_str());
        add_virtio(std::make_unique<virtio::Net>(std::move(backend), options),
                   {.label = "net" + std::to_string(nic++)});
    }
    if (config_.rng) add_virtio(std::make_unique<virtio::Rng>(), {.label = "rng"});
    if (config_.console == ConsoleKind::Virtio) {
        virtio::ConsoleOptions options;
        if (auto size = terminal_size()) std::tie(options.cols, options.rows) = *size;
        auto console = std::make_unique<virtio::Console>(std::make_unique<devices::FdOutput>(STDOUT_FILENO), options);
        virtio::Console& model = *console;
        console_ = virtio::DeviceHandle<virtio::Console>(
            *add_virtio(std::move(console), {.label = "console"}).transport, model);
    }
}

std::optional<std::pair<std::uint16_t, std::uint16_t>> Machine::terminal_size() {
    winsize size{};
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_col == 0 || size.ws_row == 0) return std::nullopt;
    return std::pair{size.ws_col, size.ws_row};
}

void Machine::update_console_size() {
    auto size = terminal_size();
    if (!console_ || !size) return;
    console_.with([&](virtio::Console& console) { console.set_size(size->first, size->second); });
}

void Machine::deliver_input(std::span<const std::uint8_t> bytes) {
    if (console_) {
        console_.with([&](virtio::Console& console) { console.receive_input(bytes); });
        return;
    }
    uart_.receive(bytes);
}

VmControlParts Machine::control_parts(std::function<void()> stop) {
    VmControlParts parts{.name = config_.name,
                         .cpus = config_.cpus,
                         .mem_mib = config_.mem_mib,
                         .devices = {},
                         .iommu = viommu_ ? viommu_->model() : nullptr,
                         .viommu = viommu_ ? viommu_->device() : virtio::DeviceHandle<iommu::VirtioIommu>(),
                         .stop = std::move(stop),
                         .vfio = nullptr};
    for (unsigned i = 0; i < virtio_.size(); ++i) {
        const VirtioSlot& slot = *virtio_[i];
        std::optional<std::uint32_t> endpoint;
        if (viommu_ && viommu_->model()->has_endpoint(layout::virtio_mmio_endpoint(i)))
            endpoint = layout::virtio_mmio_endpoint(i);
        parts.devices.push_back(
            {.slot = i, .label = slot.label, .transport = slot.transport.get(), .endpoint = endpoint});
    }
    if (vfio_) parts.vfio = [this] { return vfio_->describe(); };
    return parts;
}

namespace {

// How a run ends: the first reason reported wins (a vCPU's, a signal's, `lkvm stop`), and
// reporting one stops the event loop. Thread-safe.
class RunOutcome {
public:
    explicit RunOutcome(EventLoop& loop) : loop_(loop) {}
    void finish(RunResult result) {
        {
            std::lock_guard guard(lock_);
            if (!result_) result_ = std::move(result);
        }
        loop_.stop();
    }
    RunResult take() {
        std::lock_guard guard(lock_);
        return result_ ? std::move(*result_) : RunResult{RunResult::Reason::Error, "the event loop failed"};
    }

private:
    EventLoop& loop_;
    std::mutex lock_;
    std::optional<RunResult> result_;
};

// One thread per vCPU, each reporting how its vCPU stopped; stopped and joined on destruction, on
// every path out of Machine::run.
class VcpuThreads {
public:
    VcpuThreads(std::vector<kvm::Vcpu>& vcpus, MmioBus& bus, RunOutcome& outcome) : vcpus_(vcpus) {
        try {
            for (kvm::Vcpu& vcpu : vcpus_)
                threads_.emplace_back([this, &bus, &outcome, &cpu = vcpu] {
                    kvm::VcpuStop stop = kvm::run_vcpu(cpu, bus, stopping_);
                    using R = kvm::VcpuStop::Reason;
                    switch (stop.reason) {
                        case R::Requested: break;
                        case R::Shutdown: outcome.finish({RunResult::Reason::Shutdown, ""}); break;
                        case R::Reset: outcome.finish({RunResult::Reason::Reset, ""}); break;
                        case R::Crash: outcome.finish({RunResult::Reason::Crash, stop.detail}); break;
                        case R::Error: outcome.finish({RunResult::Reason::Error, stop.detail}); break;
                    }
                });
        } catch (...) {
            stop_and_join();  // the threads started so far
            throw;
        }
    }
    ~VcpuThreads() { stop_and_join(); }
    VcpuThreads(const VcpuThreads&) = delete;
    VcpuThreads& operator=(const VcpuThreads&) = delete;

private:
    void stop_and_join() {
        stopping_.store(true, std::memory_order_release);
        for (std::size_t i = 0; i < threads_.size(); ++i) {
            vcpus_[i].request_exit();
            ::pthread_kill(threads_[i].native_handle(), kvm::kKickSignal);
        }
        for (std::thread& t : threads_) t.join();
    }

    std::vector<kvm::Vcpu>& vcpus_;
    std::atomic<bool> stopping_{false};
    std::vector<std::thread> threads_;
};

}  // namespace

void Machine::watch_host_input(EventLoop& loop, const SignalFd& signals, bool console_keys,
                               std::function<void(RunResult)> finish) {
    loop.add(signals.fd(), "signals", [this, &signals, finish] {
        auto signo = signals.read_signal();
        if (!signo) return;
        if (*signo == SIGWINCH) update_console_size();
        else finish({RunResult::Reason::Signal, "", *signo});
    });
    // Console input: stdin may be a terminal, a pipe, or /dev/null (not pollable: no input). A
    // terminal lkvm does not own (started in the background) is left alone, and so is the
    // sandbox's (not interactive: CMD's stdin is /dev/null). With console keys (lkvm run on a
    // terminal) Ctrl-A x ends lkvm and Ctrl-A h prints the keys (vmm/base/console_keys.hpp).
    if (!config_.interactive || !Terminal::may_use(STDIN_FILENO)) return;
    loop.try_add(
        STDIN_FILENO, "stdin",
        [this, &loop, console_keys, finish, keys = ConsoleKeys{}, to_guest = std::vector<std::uint8_t>{}]() mutable {
            std::uint8_t buffer[256];
            ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
            if (n <= 0) {
                if (n == 0 || (errno != EINTR && errno != EAGAIN)) loop.remove(STDIN_FILENO);  // EOF: no more input
                return;
            }
            const std::span<const std::uint8_t> input(buffer, static_cast<std::size_t>(n));
            if (!console_keys) {
                deliver_input(input);
                return;
            }
            to_guest.clear();
            const ConsoleKeys::Action action = keys.feed(input, to_guest);
            if (!to_guest.empty()) deliver_input(to_guest);
            if (action == ConsoleKeys::Action::Help) {
                const std::string_view help = ConsoleKeys::help_text();
                [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, help.data(), help.size());
            } else if (action == ConsoleKeys::Action::Quit) {
                finish({RunResult::Reason::Shutdown, "Ctrl-A x"});
            }
        });
}

std::unique_ptr<virtio::DeviceEvents> Machine::serve(EventLoop& loop, VirtioSlot& slot) {
    std::vector<virtio::Doorbell> doorbells;
    for (const auto& doorbell : slot.doorbells)
        doorbells.push_back({doorbell->fd(), [&d = *doorbell] { return d.consume(); }, [&d = *doorbell] { d.ring(); }});
    return std::make_unique<virtio::DeviceEvents>(loop, *slot.transport, std::move(doorbells));
}

RunResult Machine::run(const SignalFd& signals, const ControlSocket* control, bool console_keys) {
    kvm::install_kick_handler();
    EventLoop loop;
    RunOutcome outcome(loop);
    watch_host_input(loop, signals, console_keys, [&outcome](RunResult result) { outcome.finish(std::move(result)); });
    // Every virtio device on this thread: queue kicks and its own event sources (a NIC's backend).
    std::vector<std::unique_ptr<virtio::DeviceEvents>> devices;
    for (const auto& slot : virtio_) devices.push_back(serve(loop, *slot));
    // The control channel, from now on (the VM is built); `stop` counts as an orderly shutdown.
    std::optional<VmControl> control_target;
    std::optional<ControlServer> control_server;
    if (control) {
        control_target.emplace(control_parts([&] { outcome.finish({RunResult::Reason::Shutdown, "lkvm stop"}); }));
        control_server.emplace(loop, *control, *control_target);
    }
    VcpuThreads threads(vcpus_, bus_, outcome);
    loop.run();
    return outcome.take();
}

}  // namespace vmm
