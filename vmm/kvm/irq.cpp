#include "vmm/kvm/irq.hpp"

#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace vmm::kvm {

IrqfdLine::IrqfdLine(const Vm& vm, std::uint32_t spi)
    : vm_(vm), spi_(spi), event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!event_) throw_errno("eventfd for SPI " + std::to_string(spi));
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<std::uint32_t>(event_.get());
    irqfd.gsi = spi;
    if (::ioctl(vm_.fd(), KVM_IRQFD, &irqfd) != 0) throw_errno("KVM_IRQFD for SPI " + std::to_string(spi));
}

IrqfdLine::~IrqfdLine() {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<std::uint32_t>(event_.get());
    irqfd.gsi = spi_;
    irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
    ::ioctl(vm_.fd(), KVM_IRQFD, &irqfd);
}

void IrqfdLine::trigger() {
    std::uint64_t one = 1;
    if (::write(event_.get(), &one, sizeof one) != sizeof one && errno != EAGAIN)
        log_warn("irqfd for SPI %u: %s", spi_, std::strerror(errno));
}

namespace {
kvm_ioeventfd describe(int fd, GuestPhysAddr addr, std::uint32_t length, std::optional<std::uint64_t> datamatch) {
    kvm_ioeventfd io{};
    io.addr = addr.value;
    io.len = length;
    io.fd = fd;
    if (datamatch) {
        io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
        io.datamatch = *datamatch;
    }
    return io;
}
}  // namespace

IoEventFd::IoEventFd(const Vm& vm, GuestPhysAddr addr, std::uint32_t length, std::optional<std::uint64_t> datamatch)
    : vm_(vm), addr_(addr), length_(length), datamatch_(datamatch), event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!event_) throw_errno("eventfd for a doorbell");
    kvm_ioeventfd io = describe(event_.get(), addr_, length_, datamatch_);
    if (::ioctl(vm_.fd(), KVM_IOEVENTFD, &io) != 0) throw_errno("KVM_IOEVENTFD");
}

IoEventFd::~IoEventFd() {
    kvm_ioeventfd io = describe(event_.get(), addr_, length_, datamatch_);
    io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    ::ioctl(vm_.fd(), KVM_IOEVENTFD, &io);
}

bool IoEventFd::consume() const {
    std::uint64_t count = 0;
    return ::read(event_.get(), &count, sizeof count) == sizeof count && count != 0;
}

void IoEventFd::ring() const {
    const std::uint64_t one = 1;
    // Fails only when the counter would overflow, i.e. when it is signalled already.
    [[maybe_unused]] const ssize_t n = ::write(event_.get(), &one, sizeof one);
}

}  // namespace vmm::kvm
