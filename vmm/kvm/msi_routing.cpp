#include "vmm/kvm/msi_routing.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <memory>

namespace vmm::kvm {
namespace {

// GSIs above every SPI; KVM accepts GSIs below KVM_MAX_IRQ_ROUTES (4096).
constexpr std::uint32_t kFirstMsiGsi = 1024;
constexpr std::uint32_t kMaxGsi = 4096;

}  // namespace

MsiRouting::MsiRouting(const Vm& vm, std::uint32_t spis, GuestRange its_frame)
    : vm_(vm),
      spis_(spis),
      its_frame_(its_frame),
      devid_(vm.check_extension(KVM_CAP_MSI_DEVID) > 0),
      next_gsi_(kFirstMsiGsi) {
    if (!devid_) log_debug("KVM_CAP_MSI_DEVID is not offered: MSI routes carry no DeviceID");
}

MsiRouting::~MsiRouting() {
    std::lock_guard guard(lock_);
    for (const auto& [fd, route] : routes_) set_irqfd(fd, route.gsi, false);
    routes_.clear();
    commit();  // back to the identity SPI routes only
}

std::size_t MsiRouting::route_count() const {
    std::lock_guard guard(lock_);
    return routes_.size();
}

bool MsiRouting::set_irqfd(int eventfd, std::uint32_t gsi, bool assign) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<std::uint32_t>(eventfd);
    irqfd.gsi = gsi;
    irqfd.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
    if (::ioctl(vm_.fd(), KVM_IRQFD, &irqfd) == 0) return true;
    std::uint64_t dropped = 0;
    if (log_.allow(&dropped))
        log_warn("KVM_IRQFD (%s) for GSI %u: %s", assign ? "assign" : "deassign", gsi, std::strerror(errno));
    return false;
}

bool MsiRouting::commit() {
    const std::size_t count = spis_ + routes_.size();
    const std::size_t bytes = sizeof(kvm_irq_routing) + count * sizeof(kvm_irq_routing_entry);
    auto storage = std::make_unique<std::uint64_t[]>((bytes + 7) / 8);
    auto* table = reinterpret_cast<kvm_irq_routing*>(storage.get());
    std::memset(table, 0, bytes);
    table->nr = static_cast<std::uint32_t>(count);
    std::size_t i = 0;
    for (std::uint32_t spi = 0; spi < spis_; ++spi, ++i) {
        table->entries[i].gsi = spi;
        table->entries[i].type = KVM_IRQ_ROUTING_IRQCHIP;
        table->entries[i].u.irqchip.irqchip = 0;
        table->entries[i].u.irqchip.pin = spi;
    }
    for (const auto& [fd, route] : routes_) {
        kvm_irq_routing_entry& e = table->entries[i++];
        e.gsi = route.gsi;
        e.type = KVM_IRQ_ROUTING_MSI;
        e.u.msi.address_lo = static_cast<std::uint32_t>(route.message.address);
        e.u.msi.address_hi = static_cast<std::uint32_t>(route.message.address >> 32);
        e.u.msi.data = route.message.data;
        if (devid_) {
            e.flags = KVM_MSI_VALID_DEVID;
            e.u.msi.devid = route.rid;
        }
    }
    if (::ioctl(vm_.fd(), KVM_SET_GSI_ROUTING, table) == 0) return true;
    std::uint64_t dropped = 0;
    if (log_.allow(&dropped)) log_warn("KVM_SET_GSI_ROUTING with %zu entries: %s", count, std::strerror(errno));
    return false;
}

bool MsiRouting::route(int eventfd, std::uint16_t rid, const devices::pci::MsiMessage& message) {
    std::lock_guard guard(lock_);
    // The only MSI target lkvm's guests have is the ITS: anything else cannot be delivered.
    if (!its_frame_.contains(GuestPhysAddr{message.address})) {
        guest_error(log_, "MSI from %04x to 0x%" PRIx64 " is not an ITS doorbell; vector left unrouted", rid,
                    message.address);
        drop(eventfd);
        return false;
    }
    auto it = routes_.find(eventfd);
    const bool is_new = it == routes_.end();
    Route before{};
    if (is_new) {
        std::uint32_t gsi = 0;
        if (!free_gsis_.empty()) {
            gsi = free_gsis_.back();
            free_gsis_.pop_back();
        } else if (next_gsi_ < kMaxGsi) {
            gsi = next_gsi_++;
        } else {
            guest_error(log_, "out of GSIs for MSI routes");
            return false;
        }
        it = routes_.emplace(eventfd, Route{gsi, rid, message}).first;
    } else {
        before = it->second;
        it->second.rid = rid;
        it->second.message = message;
    }
    if (!commit()) {
        if (is_new) {
            free_gsis_.push_back(it->second.gsi);
            routes_.erase(it);
        } else {
            it->second = before;
        }
        return false;
    }
    // A new irqfd delivers at once if the eventfd was signalled meanwhile (the pending bit).
    if (is_new && !set_irqfd(eventfd, it->second.gsi, true)) {
        free_gsis_.push_back(it->second.gsi);
        routes_.erase(it);
        commit();
        return false;
    }
    return true;
}

void MsiRouting::unroute(int eventfd) {
    std::lock_guard guard(lock_);
    drop(eventfd);
}

void MsiRouting::drop(int eventfd) {
    auto it = routes_.find(eventfd);
    if (it == routes_.end()) return;
    // Deassigned, the eventfd keeps counting: the interrupt stays pending for a later route.
    set_irqfd(eventfd, it->second.gsi, false);
    free_gsis_.push_back(it->second.gsi);
    routes_.erase(it);
    commit();
}

}  // namespace vmm::kvm
