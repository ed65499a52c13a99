// mode=user: in-process user-mode networking through libslirp. The guest sees a NAT gateway
// (host_ip, default 10.0.2.2) with a DHCP server handing out guest_ip and a DNS forwarder on .3;
// its TCP/UDP flows become ordinary host sockets of lkvm (no root, no host configuration);
// hostfwd= listens on host ports and connects into the guest.
//
// Driven by the machine's event loop, no thread of its own: service_fd() is an epoll set holding
// slirp's sockets (with the events slirp asked for) and a timerfd for slirp's timers, readable
// whenever service() has work. Frames slirp emits for the guest wait in a bounded queue
// (receive_fd() readable while it is non-empty); beyond kMaxQueuedFrames they are dropped, counted.
//
// Host descriptors: each guest flow costs lkvm a socket (one per UDP source port, TCP connection,
// ICMP echo), and libslirp 4.7 has no limit of its own. The backend counts the sockets slirp holds
// (every one shows up in slirp's poll set when it is made; a descriptor that left the set is
// counted until fstat() shows it closed) and, at max_sockets, drops the guest frames that could
// open another (UDP datagrams, TCP SYNs, ICMP echo requests) and leaves hostfwd connections in
// their listener's backlog. A listener slirp cannot accept from (at the cap, no descriptor left,
// or still readable after many rounds) is paused for a while instead of spinning the loop.
#pragma once

#include <sys/types.h>

#include <poll.h>
#include <chrono>
#include <cstdint>
#include <deque>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "virtio/net_backend.hpp"
#include "vmm/base/ipv4.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

struct Slirp;

namespace devices::net {

// One user-mode network, as the backend needs it (vmm/net_config.cpp builds it from -n mode=user).
struct SlirpOptions {
    struct Forward {
        bool udp = false;
        std::uint32_t host_addr = vmm::kIpv4Loopback;  // host order; where to listen (0: every address)
        std::uint16_t host_port = 0;
        std::uint32_t guest_addr = 0;  // host order; 0: guest_ip
        std::uint16_t guest_port = 0;
    };
    std::uint32_t host_ip = 0x0a000202;   // host order: the gateway; its /24 is the network
    std::uint32_t guest_ip = 0x0a00020f;  // host order: the address DHCP hands out
    std::vector<Forward> hostfwd;         // host ports into the guest
    bool host_loopback = true;            // host_ip leads to the host's 127.0.0.1 services
    bool restricted = false;              // restrict=on: no outbound traffic at all
};

struct SlirpLimits {
    // Sockets slirp may hold (flows, hostfwd listeners and their connections); 0: 1024, or a
    // quarter of the descriptor limit (RLIMIT_NOFILE) if that is less.
    std::size_t max_sockets = 0;
    // How long a listener that cannot accept is left alone.
    std::chrono::milliseconds listener_backoff{250};
};

class SlirpBackend final : public virtio::NetBackend {
public:
    // Enough for a full TCP receive window of the guest (Linux grows it to a few MiB) in 1514-byte
    // frames: while the guest is short of buffers, slirp's flows queue here instead of losing
    // frames to its (SACK-less) retransmission timers.
    static constexpr std::size_t kMaxQueuedFrames = 4096;
    // Service rounds a listener may stay readable before it is paused: slirp accepts one
    // connection per round from a backlog of one, so only failing accepts keep it readable long.
    static constexpr unsigned kListenerRounds = 16;

    // Throws vmm::SetupError naming the -n parameter at fault (a hostfwd port already in use).
    explicit SlirpBackend(const SlirpOptions& options, SlirpLimits limits = {});
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
    std::size_t max_sockets() const { return max_sockets_; }
    std::size_t sockets() const;          // sockets slirp holds, as counted (see above)
    std::uint64_t refused_flows() const;  // guest frames dropped at the socket cap
    std::uint64_t listener_pauses() const;

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
    // Whether `frame` may make slirp open a socket (see the header comment).
    bool may_open_socket(std::span<const std::uint8_t> frame) const;
    // The count against the cap, after forgetting descriptors slirp has closed meanwhile.
    std::size_t sockets_after_purge();
    // Listeners readable in this round that slirp must not accept from now: paused.
    void hold_back_listeners();
    bool listener_paused(int fd, std::int64_t now_ms) const;

    SlirpOptions options_;
    mutable std::mutex lock_;
    Slirp* slirp_ = nullptr;
    vmm::UniqueFd epoll_;
    vmm::UniqueFd timer_fd_;
    vmm::UniqueFd queued_event_;  // eventfd: non-zero while queued_ is not empty
    std::deque<std::vector<std::uint8_t>> queued_;
    std::uint64_t dropped_ = 0;
    std::vector<std::unique_ptr<Timer>> timers_;
    std::vector<pollfd> pollfds_;              // filled by slirp_pollfds_fill
    std::map<int, std::uint32_t> registered_;  // fd -> epoll events in epoll_
    bool sync_due_ = false;                    // slirp_input ran since the last sync()
    std::int64_t timer_deadline_ms_ = -1;      // what timer_fd_ is armed for; -1: disarmed or fired

    std::size_t max_sockets_;
    std::chrono::milliseconds listener_backoff_;
    std::map<int, ino_t> sockets_;         // descriptor -> socket inode, every one slirp polled
    std::size_t admitted_since_sync_ = 0;  // frames that may have opened a socket not yet seen
    bool purged_since_sync_ = false;
    std::uint64_t refused_flows_ = 0;
    struct Listener {
        unsigned readable_rounds = 0;
        std::int64_t paused_until_ms = -1;
    };
    std::map<int, Listener> listeners_;  // the hostfwd TCP listeners
    std::uint64_t listener_pauses_ = 0;
    vmm::RateLimiter log_;
};

}  // namespace devices::net
