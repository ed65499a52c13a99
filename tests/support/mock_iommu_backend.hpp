// A MapListener for tests: mirrors each endpoint's address space like a VFIO container would,
// checks that the Iommu follows the listener contract (iommu/map_listener.hpp), and injects
// failures (a failing n-th call, a failing endpoint, a mapping budget like VFIO's
// dma_entry_limit) so rollback can be proven.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "iommu/map_listener.hpp"

namespace iommu::testing {

class MockIommuBackend final : public MapListener {
public:
    enum class Op : std::uint8_t { Detach, Attach, Map, Unmap };
    enum class Mode : std::uint8_t { Blocked, Bypass, Domain };

    struct EndpointState {
        Mode mode = Mode::Blocked;
        DomainId domain = 0;         // Mode::Domain only
        bool domain_bypass = false;  // Mode::Domain only
        std::map<std::uint64_t, Mapping> mappings;
        friend bool operator==(const EndpointState&, const EndpointState&) = default;
    };
    struct Call {
        Op op;
        EndpointId endpoint;
        ListenerResult result;
    };

    ListenerResult detach(EndpointId endpoint, bool bypass) override;
    ListenerResult attach(EndpointId endpoint, DomainId domain, bool bypass, const MappingSource& mappings) override;
    ListenerResult map(EndpointId endpoint, const Mapping& mapping) override;
    ListenerResult unmap(EndpointId endpoint, const Mapping& mapping) override;

    // ---- failure injection
    // After `successes` more successful calls (of kind `only`, if given), the next one fails
    // with `result`; later calls succeed again.
    void fail_after(std::size_t successes, ListenerResult result, std::optional<Op> only = std::nullopt);
    // Every call of kind `op` for `endpoint` fails with `result` until clear_failures().
    void fail_endpoint(EndpointId endpoint, Op op, ListenerResult result);
    // detach(endpoint, true) fails with NoMemory (the endpoint ends blocked), like a bypass
    // identity map beyond RLIMIT_MEMLOCK, until clear_failures().
    void refuse_bypass(EndpointId endpoint) { bypass_refused_.push_back(endpoint); }
    void clear_failures();
    // At most `mappings` live mappings per endpoint; a map beyond answers NoMemory.
    void set_budget(std::size_t mappings) { budget_ = mappings; }

    // ---- inspection
    // Bench mode: count calls only (no state, no call log), to measure the model's own cost.
    void set_counting_only(bool counting_only) { counting_only_ = counting_only; }
    const std::map<EndpointId, EndpointState>& states() const { return states_; }
    const EndpointState* state(EndpointId endpoint) const;
    const std::vector<Call>& calls() const { return calls_; }
    std::size_t count(Op op) const { return counts_[static_cast<std::size_t>(op)]; }
    std::size_t failures() const { return failures_; }
    // Calls that broke the listener contract (e.g. map while blocked, unmap of an unknown or
    // split mapping, attach while attached); each is described in violation_log().
    std::size_t violations() const { return violations_.size(); }
    const std::vector<std::string>& violation_log() const { return violations_; }
    void clear_log() { calls_.clear(); }

private:
    bool should_fail(Op op, EndpointId endpoint, ListenerResult& result);
    ListenerResult finish(Op op, EndpointId endpoint, ListenerResult result);
    void violation(const std::string& what) { violations_.push_back(what); }

    std::map<EndpointId, EndpointState> states_;
    std::vector<Call> calls_;
    std::size_t counts_[4] = {};
    std::size_t failures_ = 0;
    std::vector<std::string> violations_;
    bool counting_only_ = false;

    std::optional<std::size_t> fail_countdown_;
    ListenerResult fail_result_ = ListenerResult::Failed;
    std::optional<Op> fail_only_;
    struct EndpointFailure {
        EndpointId endpoint;
        Op op;
        ListenerResult result;
    };
    std::vector<EndpointFailure> endpoint_failures_;
    std::optional<std::size_t> budget_;
    std::vector<EndpointId> bypass_refused_;
};

}  // namespace iommu::testing
