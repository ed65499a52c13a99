// MockIommuBackend: see the header. Every method follows the contract of iommu/map_listener.hpp.
#include "tests/support/mock_iommu_backend.hpp"

#include <algorithm>
#include <iterator>

namespace iommu::testing {

bool MockIommuBackend::should_fail(Op op, EndpointId endpoint, ListenerResult& result) {
    for (const EndpointFailure& failure : endpoint_failures_) {
        if (failure.endpoint == endpoint && failure.op == op) {
            result = failure.result;
            return true;
        }
    }
    if (fail_countdown_ && (!fail_only_ || *fail_only_ == op)) {
        if (*fail_countdown_ == 0) {
            fail_countdown_.reset();
            result = fail_result_;
            return true;
        }
        --*fail_countdown_;
    }
    return false;
}

ListenerResult MockIommuBackend::finish(Op op, EndpointId endpoint, ListenerResult result) {
    ++counts_[static_cast<std::size_t>(op)];
    if (result != ListenerResult::Ok) ++failures_;
    if (!counting_only_) calls_.push_back({op, endpoint, result});
    return result;
}

ListenerResult MockIommuBackend::detach(EndpointId endpoint, bool bypass) {
    ListenerResult injected;
    const bool refused =
        bypass && std::find(bypass_refused_.begin(), bypass_refused_.end(), endpoint) != bypass_refused_.end();
    if (refused) injected = ListenerResult::NoMemory;
    if (refused || should_fail(Op::Detach, endpoint, injected)) {
        // A refused bypass leaves the endpoint blocked; a refused block (the host would not
        // unmap) leaves it as it was, which the model must count as stale host state.
        if (bypass && !counting_only_) states_[endpoint] = EndpointState{};
        return finish(Op::Detach, endpoint, injected);
    }
    if (!counting_only_) {
        EndpointState& state = states_[endpoint];
        state = EndpointState{};
        state.mode = bypass ? Mode::Bypass : Mode::Blocked;
    }
    return finish(Op::Detach, endpoint, ListenerResult::Ok);
}

ListenerResult MockIommuBackend::attach(EndpointId endpoint, DomainId domain, bool bypass,
                                        const MappingSource& mappings) {
    ListenerResult injected;
    const bool fail = should_fail(Op::Attach, endpoint, injected);
    if (counting_only_) return finish(Op::Attach, endpoint, fail ? injected : ListenerResult::Ok);
    EndpointState& state = states_[endpoint];
    if (state.mode == Mode::Domain)
        violation("attach of endpoint " + std::to_string(endpoint) + " while in domain " +
                  std::to_string(state.domain));
    if (bypass && mappings.size() != 0) violation("attach to a bypass domain with mappings");
    state = EndpointState{};  // a failed attach leaves the endpoint blocked
    if (fail) return finish(Op::Attach, endpoint, injected);
    if (budget_ && mappings.size() > *budget_) return finish(Op::Attach, endpoint, ListenerResult::NoMemory);
    state.mode = Mode::Domain;
    state.domain = domain;
    state.domain_bypass = bypass;
    mappings.all_of([&](const Mapping& mapping) {
        state.mappings.emplace(mapping.first.value, mapping);
        return true;
    });
    return finish(Op::Attach, endpoint, ListenerResult::Ok);
}

ListenerResult MockIommuBackend::map(EndpointId endpoint, const Mapping& mapping) {
    ListenerResult injected;
    if (should_fail(Op::Map, endpoint, injected)) return finish(Op::Map, endpoint, injected);
    if (!counting_only_) {
        EndpointState& state = states_[endpoint];
        if (state.mode != Mode::Domain || state.domain_bypass) {
            violation("map for endpoint " + std::to_string(endpoint) + " outside a translating domain");
            return finish(Op::Map, endpoint, ListenerResult::Invalid);
        }
        if (budget_ && state.mappings.size() >= *budget_) return finish(Op::Map, endpoint, ListenerResult::NoMemory);
        auto next = state.mappings.upper_bound(mapping.first.value);
        bool overlap = (next != state.mappings.end() && next->first <= mapping.last.value) ||
                       (next != state.mappings.begin() && std::prev(next)->second.last >= mapping.first);
        if (overlap) {
            violation("map overlapping an existing mapping of endpoint " + std::to_string(endpoint));
            return finish(Op::Map, endpoint, ListenerResult::Invalid);
        }
        state.mappings.emplace(mapping.first.value, mapping);
    }
    return finish(Op::Map, endpoint, ListenerResult::Ok);
}

ListenerResult MockIommuBackend::unmap(EndpointId endpoint, const Mapping& mapping) {
    ListenerResult injected;
    if (should_fail(Op::Unmap, endpoint, injected)) return finish(Op::Unmap, endpoint, injected);
    if (!counting_only_) {
        EndpointState& state = states_[endpoint];
        auto it = state.mappings.find(mapping.first.value);
        if (it == state.mappings.end() || !(it->second == mapping)) {
            violation("unmap of a mapping endpoint " + std::to_string(endpoint) + " does not hold");
            return finish(Op::Unmap, endpoint, ListenerResult::Invalid);
        }
        state.mappings.erase(it);
    }
    return finish(Op::Unmap, endpoint, ListenerResult::Ok);
}

void MockIommuBackend::fail_after(std::size_t successes, ListenerResult result, std::optional<Op> only) {
    fail_countdown_ = successes;
    fail_result_ = result;
    fail_only_ = only;
}

void MockIommuBackend::fail_endpoint(EndpointId endpoint, Op op, ListenerResult result) {
    endpoint_failures_.push_back({endpoint, op, result});
}

void MockIommuBackend::clear_failures() {
    fail_countdown_.reset();
    endpoint_failures_.clear();
    bypass_refused_.clear();
}

const MockIommuBackend::EndpointState* MockIommuBackend::state(EndpointId endpoint) const {
    auto it = states_.find(endpoint);
    return it == states_.end() ? nullptr : &it->second;
}

}  // namespace iommu::testing
