// Test-only NetBackend: frames the device sends are recorded, frames for the guest are queued by
// the test; optional vnet header and offloads, and a capacity to play a full backend.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "virtio/net_backend.hpp"

namespace support {

class FakeNetBackend final : public virtio::NetBackend {
public:
    // State the test keeps after the backend moved into the device.
    struct State {
        bool vnet_header = false;
        std::uint64_t offloads = 0;
        std::uint64_t offloads_set = 0;        // last set_offloads() argument
        std::size_t send_capacity = SIZE_MAX;  // sends accepted before send() reports full
        std::vector<std::vector<std::uint8_t>> sent;
        std::vector<std::size_t> flushed_at;  // sent.size() at every flush()
        std::deque<std::vector<std::uint8_t>> inbound;
        // Runs at every receive(), before a frame is handed over: a test's stand-in for the guest
        // driver working on another CPU meanwhile (taking used buffers, posting new ones). It runs
        // under the transport lock, so it must not touch the transport's registers.
        std::function<void()> on_receive;
        int receive_fd = -1;  // what receive_fd() / service_fd() report (the test's own fds)
        int service_fd = -1;
        unsigned services = 0;  // service() calls
    };

    explicit FakeNetBackend(std::shared_ptr<State> state) : state_(std::move(state)) {}

    std::string_view kind() const override { return "fake"; }
    bool has_vnet_header() const override { return state_->vnet_header; }
    std::uint64_t offload_features() const override { return state_->offloads; }
    bool set_offloads(std::uint64_t features) override {
        state_->offloads_set = features;
        return true;
    }
    bool send(std::span<const std::uint8_t> frame) override {
        if (state_->sent.size() >= state_->send_capacity) return false;
        state_->sent.emplace_back(frame.begin(), frame.end());
        return true;
    }
    void flush() override { state_->flushed_at.push_back(state_->sent.size()); }
    std::size_t receive(std::span<std::uint8_t> buffer) override {
        if (state_->on_receive) state_->on_receive();
        // Bounded by the queue; oversized frames are dropped as a real backend does.
        while (!state_->inbound.empty()) {
            std::vector<std::uint8_t> frame = std::move(state_->inbound.front());
            state_->inbound.pop_front();
            if (frame.size() > buffer.size()) continue;
            std::copy(frame.begin(), frame.end(), buffer.begin());
            return frame.size();
        }
        return 0;
    }
    int receive_fd() const override { return state_->receive_fd; }
    int service_fd() const override { return state_->service_fd; }
    void service() override { ++state_->services; }

private:
    std::shared_ptr<State> state_;
};

}  // namespace support
