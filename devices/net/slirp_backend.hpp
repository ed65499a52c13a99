// mode=user: in-process user-mode networking through libslirp. The guest sees a NAT gateway
// (host_ip, default 10.0.2.2) with a DHCP server handing out guest_ip and a DNS forwarder on .3;
// its TCP/UDP flows become ordinary host sockets of lkvm (no root, no host configuration);
// hostfwd= listens on host ports and connects into the guest.
//
// Driven by the machine's event loop, no thread of its own: service_fd() is an epoll set holding
// slirp's sockets (with the events slirp asked for) and a timerfd for slirp's timers, readable
// whenever service() has work. Frames slirp emits for the guest wait in a bounded queue
// (receive_fd() readable while it is non-empty); beyond kMaxQueuedFrames they are dropped, counted.
#pragma once

#include <cstdint>
#include <deque>
#include <poll.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "virtio/net_backend.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

struct Slirp;

namespace devices::net {

// One user-mode network, as the backend needs it (vmm/net_config.cpp builds it from -n mode=user).
struct SlirpOptions {
    struct Forward {
        bool udp = false;
        std::uint16_t host_port = 0;
        std::uint16_t guest_port = 0;
    };
    std::uint32_t host_ip = 0x0a000202;   // host order: the gateway; its /24 is the network
    std::uint32_t guest_ip = 0x0a00020f;  // host order: the address DHCP hands out
    std::vector<Forward> hostfwd;         // host ports (on every host address) into the guest
};

class SlirpBackend final : public virtio::NetBackend {
public:
    // Enough for a full TCP receive window of the guest (Linux grows it to a few MiB) in 1514-byte
    // frames: while the guest is short of buffers, slirp's flows queue here instead of losing
    // frames to its (SACK-less) retransmission timers.
    static constexpr std::size_t kMaxQueuedFrames = 4096;

    // Throws vmm::SetupError naming the -n parameter at fault (a hostfwd port already in use).
    explicit SlirpBackend(const SlirpOptions& options);
    ~SlirpBackend() override;
    SlirpBackend(const SlirpBackend&) = delete;
    SlirpBackend& operator=(const SlirpBackend&) = delete;

    std::string_view kind() const override { return "user"; }
    std::string describe() const override;
    bool send(std::span<const std::uint8_t> frame) override;
    void flush() override;
    std::size_t receive(std::span<std::uint8_t> buffer) override;
    int receive_fd() const override { return queued_event_.get(); }
    int service_fd() const override { return epoll_.get(); }
    void service() override;

    std::uint64_t dropped() const;  // frames for the guest dropped because the queue was full

    // libslirp callbacks (C linkage trampolines call these; `lock_` is held).
    struct Timer;
    void emit(const void* frame, std::size_t length);
    Timer* timer_new(void (*callback)(void*), void* opaque);
    void timer_free(Timer* timer);
    void timer_mod(Timer* timer, std::int64_t expire_ms);
    void guest_error(const char* message);
    int add_poll(int fd, int events);
    int revents(int index) const;

private:
    void run_timers();
    // Makes the epoll set and the timerfd match what slirp wants now (after every slirp call).
    void sync();

    SlirpOptions options_;
    mutable std::mutex lock_;
    Slirp* slirp_ = nullptr;
    vmm::UniqueFd epoll_;
    vmm::UniqueFd timer_fd_;
    vmm::UniqueFd queued_event_;  // eventfd: non-zero while queued_ is not empty
    std::deque<std::vector<std::uint8_t>> queued_;
    std::uint64_t dropped_ = 0;
    std::vector<std::unique_ptr<Timer>> timers_;
    std::vector<pollfd> pollfds_;  // filled by slirp_pollfds_fill
    std::map<int, std::uint32_t> registered_;  // fd -> epoll events in epoll_
    bool sync_due_ = false;                    // slirp_input ran since the last sync()
    std::int64_t timer_deadline_ms_ = -1;      // what timer_fd_ is armed for; -1: disarmed or fired
    vmm::RateLimiter log_;
};

}  // namespace devices::net
