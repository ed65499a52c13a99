// iommu::Iommu translation for emulated endpoints: IOVA -> guest-physical with permission checks
// and the bypass rules of virtio 1.2 5.13.6.2 and 5.13.6.3, through a MAP-mode domain's mappings or
// a table-mode domain's IOTLB and stage-1 walker (iommu/page_tables.md), plus fault delivery
// (5.13.6.9).
#include <array>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "iommu/iommu.hpp"

namespace iommu {
namespace {

std::uint32_t required_flags(Access access) { return access == Access::Write ? kMapWrite : kMapRead; }

// The Translator handed to DmaMemory: one endpoint's view of the IOMMU. Holds the Iommu alive.
class EndpointView final : public Translator {
public:
    EndpointView(std::shared_ptr<const Iommu> iommu, EndpointId endpoint)
        : iommu_(std::move(iommu)), endpoint_(endpoint) {}
    bool translate(vmm::Iova iova, std::uint64_t length, Access access, FragmentVisitor& visitor) const override {
        return iommu_->translate(endpoint_, iova, length, access, visitor);
    }

private:
    std::shared_ptr<const Iommu> iommu_;
    EndpointId endpoint_;
};

// The guest-physical fragments of one table-mode access, collected before any is delivered (so a
// fault on a later page delivers nothing). Adjacent pieces merge; most accesses need one or two,
// which stay on the stack.
class FragmentList {
public:
    void add(std::uint64_t gpa, std::uint64_t length) {
        if (count_ > 0) {
            Piece& previous = at(count_ - 1);
            if (previous.gpa + previous.length == gpa) {
                previous.length += length;
                return;
            }
        }
        if (count_ < inline_.size()) inline_[count_] = {gpa, length};
        else overflow_.push_back({gpa, length});
        ++count_;
    }
    bool deliver(FragmentVisitor& visitor) {
        for (std::size_t i = 0; i < count_; ++i)
            if (!visitor.visit(vmm::GuestPhysAddr{at(i).gpa}, at(i).length)) return false;
        return true;
    }

private:
    struct Piece {
        std::uint64_t gpa, length;
    };
    Piece& at(std::size_t i) { return i < inline_.size() ? inline_[i] : overflow_[i - inline_.size()]; }
    std::array<Piece, 8> inline_{};
    std::vector<Piece> overflow_;
    std::size_t count_ = 0;
};

}  // namespace

std::shared_ptr<const Translator> Iommu::translator(EndpointId id) const {
    return std::make_shared<EndpointView>(shared_from_this(), id);
}

bool Iommu::translate(EndpointId endpoint_id, vmm::Iova iova, std::uint64_t length, Access access,
                      FragmentVisitor& visitor) const {
    if (length == 0) return false;
    std::optional<Fault> fault;
    bool ok = false;
    const auto last = vmm::checked_add(iova.value, length - 1);
    {
        std::shared_lock lock(lock_);
        auto it = endpoints_.find(endpoint_id);
        if (it == endpoints_.end()) return false;  // not (or no longer) behind this IOMMU
        const Endpoint& endpoint = it->second;
        endpoint.translations.fetch_add(1, std::memory_order_relaxed);
        if (!last) {
            // An access that wraps past 2^64 cannot be mapped: the byte after 2^64 - 1 faults.
            fault = Fault{endpoint_id, FaultReason::Mapping, access, ~std::uint64_t{0}, {}};
        } else {
            ok = translate_locked(endpoint, iova.value, *last, access, visitor, fault);
        }
        if (fault) {
            endpoint.faults.fetch_add(1, std::memory_order_relaxed);
            if (endpoint.domain) endpoint.domain->faults.fetch_add(1, std::memory_order_relaxed);
        }
    }
    // Outside the lock: the sink takes the eventq lock, and the request thread may hold that
    // device's transport lock while waiting for ours (see virtio_iommu.hpp, "Locking").
    if (fault) deliver_fault(*fault);
    return ok;
}

bool Iommu::translate_locked(const Endpoint& endpoint, std::uint64_t first, std::uint64_t last, Access access,
                             FragmentVisitor& visitor, std::optional<Fault>& fault) const {
    const EndpointId id = endpoint.config.id;
    auto identity = [&] { return visitor.visit(vmm::GuestPhysAddr{first}, last - first + 1); };

    // Reserved regions first, whatever the domain (CONFORMANCE.md D53): an MSI window reaches the
    // interrupt controller untranslated; any other reserved IOVA is never accessible.
    for (const ResvRegion& region : endpoint.config.reserved) {
        if (!region.overlaps(first, last)) continue;
        if (region.kind == ResvKind::Msi && first >= region.first.value && last <= region.last.value) return identity();
        fault = Fault{id, FaultReason::Mapping, access, std::max(first, region.first.value), {}};
        return false;
    }

    const DomainState* state = endpoint.domain;
    if (!state) {
        if (unattached_bypass_ && !endpoint.blocked) return identity();  // CONFORMANCE.md D13
        fault = Fault{id, FaultReason::Domain, access, first, {}};       // CONFORMANCE.md D11
        return false;
    }
    if (state->domain.is_bypass()) return identity();  // rule 1b
    if (state->table) return translate_table(*state->table, id, first, last, access, visitor, fault);

    const Domain& domain = state->domain;
    const std::uint32_t need = required_flags(access);
    // Fast path: one mapping covers the whole access.
    const Mapping* mapping = domain.find(first);
    if (mapping && (mapping->flags & need) && mapping->last.value >= last)
        return visitor.visit(vmm::GuestPhysAddr{mapping->gpa.value + (first - mapping->first.value)}, last - first + 1);

    // Several mappings: check every byte first (no fragment delivered if any byte faults),
    // then deliver. Both walks are bounded by the number of mappings in the domain.
    std::uint64_t at = first;
    for (;;) {
        if (!mapping || !(mapping->flags & need)) {  // CONFORMANCE.md D34: permissions are enforced
            fault = Fault{id, FaultReason::Mapping, access, at, {}};
            return false;
        }
        if (mapping->last.value >= last) break;
        at = mapping->last.value + 1;
        mapping = domain.find(at);
    }
    at = first;
    for (;;) {
        mapping = domain.find(at);
        const std::uint64_t piece_last = std::min(mapping->last.value, last);
        if (!visitor.visit(vmm::GuestPhysAddr{mapping->gpa.value + (at - mapping->first.value)}, piece_last - at + 1))
            return false;
        if (piece_last == last) return true;
        at = piece_last + 1;
    }
}

std::optional<Stage1Leaf> Iommu::resolve(const TableState& table, EndpointId endpoint, std::uint64_t iova) const {
    if (std::optional<Stage1Leaf> leaf = table.iotlb.lookup(iova)) return leaf;
    // A walk that races a guest rewriting its tables sees the old or the new descriptor, as a
    // hardware walker would; an INVALIDATE cannot run meanwhile (we hold the shared lock), so
    // what it drops is never filled back by a walk that started before it.
    const WalkResult walk = walk_stage1(table.descriptor.stage1, *ram_, iova);
    table.iotlb.record_walk(walk.leaf);
    if (!walk.leaf)
        vmm::guest_error(walk_log_, "virtio-iommu: endpoint %u: IOVA %#llx: stage-1 walk fault at level %u: %s",
                         endpoint, static_cast<unsigned long long>(iova), walk.level, walk_error_name(walk.error));
    return walk.leaf;
}

bool Iommu::translate_table(const TableState& table, EndpointId id, std::uint64_t first, std::uint64_t last,
                            Access access, FragmentVisitor& visitor, std::optional<Fault>& fault) const {
    // Leaf by leaf (bounded by the access length over the smallest leaf); every byte is checked
    // before the first fragment is delivered, as in MAP mode.
    FragmentList fragments;
    std::uint64_t at = first;
    for (;;) {
        const std::optional<Stage1Leaf> leaf = resolve(table, id, at);
        // page_tables.md, "The walk": AP[2] (and APTable[1]) refuse writes; reads are always allowed.
        if (!leaf || (access == Access::Write && !leaf->writable)) {
            fault = Fault{id, FaultReason::Mapping, access, at, {}};  // CONFORMANCE.md D69
            return false;
        }
        const std::uint64_t piece_last = std::min(leaf->iova_base + (leaf->size() - 1), last);
        fragments.add(leaf->gpa_base + (at - leaf->iova_base), piece_last - at + 1);
        if (piece_last == last) break;
        at = piece_last + 1;
    }
    return fragments.deliver(visitor);
}

void Iommu::deliver_fault(const Fault& fault) const {
    faults_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard guard(sink_lock_);
    if (sink_) sink_->report_fault(fault);
    else faults_undelivered_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace iommu
