// libFuzzer target: page-table handover (iommu/page_tables.md) with hostile tables and requests.
// A small guest RAM whose descriptors the input writes (raw, or pointer-shaped so that walks go
// deep), ATTACH_TABLE and INVALIDATE as wire bytes through protocol::parse_request (wild TCR,
// TTBR, scopes and ranges), MAP-mode requests and resets mixed in, and translations of emulated
// endpoints through the IOTLB and the walker. Besides ASan/UBSan findings it traps on broken
// invariants: a walk's leaf outside its own rules, a translation that delivers other than the
// bytes asked for, an IOTLB over its capacity or not empty after INVALIDATE by domain, and a
// translation right after INVALIDATE that disagrees with a fresh walk. Endpoint 3 has an external
// IOMMU (a mock VFIO container): its domain's table is shadowed into it (page_tables.md,
// "Shadowed endpoints"), and the mock must never see a call that breaks the listener contract
// nor hold other than the domain's runs.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <variant>

#include "iommu/iommu.hpp"
#include "iommu/protocol.hpp"
#include "iommu/stage1_walker.hpp"
#include "iommu/uapi/virtio_iommu_tables.h"
#include "tests/support/fake_driver.hpp"
#include "tests/support/mock_iommu_backend.hpp"
#include "vmm/base/log.hpp"

namespace {

constexpr std::uint64_t kRamBase = 0x4000'0000;
constexpr std::uint64_t kRamSize = 256 << 10;
constexpr std::size_t kIotlbCapacity = 8;
constexpr int kMaxOps = 96;
constexpr iommu::EndpointId kExternal = 3;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

// Checks every fragment and that they add up to the access.
class CheckedVisitor final : public iommu::FragmentVisitor {
public:
    bool visit(vmm::GuestPhysAddr gpa, std::uint64_t length) override {
        require(length > 0);
        require(vmm::checked_add(gpa.value, length - 1).has_value());
        total += length;
        if (pieces++ == 0) first = gpa.value;
        return true;
    }
    std::uint64_t total = 0, first = 0;
    std::size_t pieces = 0;
};

class Session {
public:
    explicit Session(FuzzedDataProvider& fdp) : fdp_(fdp), ram_(kRamBase, kRamSize) {
        iommu::Limits limits;
        limits.max_domains = 8;
        limits.iotlb_capacity = kIotlbCapacity;
        limits.shadow_walk_reads = 4096;  // a whole table of RAM is 32768 descriptors: cuts happen
        iommu_ = std::make_shared<iommu::Iommu>(limits, &ram_.memory());
        for (iommu::EndpointId id : {1u, 2u}) iommu_->add_endpoint({id, {}, nullptr});
        backend_->set_budget(16);  // refusals happen too
        iommu_->add_endpoint({kExternal, {}, backend_});
        iommu::Geometry geometry;
        geometry.domain_last = 15;
        iommu_->set_geometry(geometry);
    }

    void run() {
        for (int op = 0; op < kMaxOps && fdp_.remaining_bytes() > 0; ++op) {
            switch (fdp_.ConsumeIntegralInRange<int>(0, 9)) {
                case 0:
                case 1: write_descriptor(); break;
                case 2: attach_table(); break;
                case 3: invalidate(); break;
                case 4:
                case 5: translate(); break;
                case 6: walk_directly(); break;
                case 7: map_mode_request(); break;
                case 8: check_after_invalidate(); break;
                default: iommu_->reset(); break;
            }
            for (const iommu::DomainStats& d : iommu_->all_domain_stats())
                if (d.table) require(d.iotlb.entries <= kIotlbCapacity);
            check_shadow();
        }
    }

private:
    std::uint64_t ram_address(std::uint64_t align) {
        return (kRamBase + fdp_.ConsumeIntegralInRange<std::uint64_t>(0, kRamSize - 1)) & ~(align - 1);
    }

    // A descriptor-shaped value: pointing into RAM (or just past it) with attribute bits, or raw.
    std::uint64_t descriptor() {
        switch (fdp_.ConsumeIntegralInRange<int>(0, 3)) {
            case 0: return fdp_.ConsumeIntegral<std::uint64_t>();
            case 1: return ram_address(0x1000) | 3 | (1ULL << 10);  // table, or a page at level 3
            case 2: return ram_address(0x1000) | 1 | (1ULL << 10);  // block
            default:
                return (ram_address(0x1000) | fdp_.ConsumeIntegral<std::uint16_t>()) ^
                       (std::uint64_t{fdp_.ConsumeIntegral<std::uint16_t>()} << 48);
        }
    }

    void write_descriptor() { ram_.write_obj(ram_address(8), descriptor()); }

    std::uint64_t wild_tcr() {
        if (fdp_.ConsumeBool()) return fdp_.ConsumeIntegral<std::uint64_t>();
        const std::uint64_t t0sz = fdp_.ConsumeIntegralInRange<std::uint64_t>(14, 41);
        const std::uint64_t tg0 = fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 3);
        const std::uint64_t ips = fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 7);
        const std::uint64_t flags = fdp_.ConsumeIntegral<std::uint8_t>();  // EPD0, HPD0, HA, HD, TBI0
        return t0sz | (tg0 << 14) | (ips << 32) | ((flags & 1) << 7) | ((flags & 2) ? iommu::tcr::kHpd0 : 0) |
               ((flags & 0xfc) == 0x04 ? iommu::tcr::kHa : 0) | ((flags & 0xfc) == 0x08 ? iommu::tcr::kTbi0 : 0);
    }

    void attach_table() {
        lkvm_viommu_req_attach_table wire{};
        wire.head.type = LKVM_VIOMMU_T_ATTACH_TABLE;
        wire.domain = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 17);
        wire.endpoint = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 4);
        wire.format = fdp_.ConsumeBool() ? LKVM_VIOMMU_FMT_ARM_LPAE_S1 : fdp_.ConsumeIntegral<std::uint16_t>();
        wire.asid = fdp_.ConsumeIntegralInRange<std::uint16_t>(0, 3);
        wire.tcr = wild_tcr();
        wire.ttbr = fdp_.ConsumeBool() ? ram_address(0x1000) : fdp_.ConsumeIntegral<std::uint64_t>();
        wire.mair = fdp_.ConsumeIntegral<std::uint8_t>();
        const iommu::protocol::Request request = parse(&wire, sizeof wire - sizeof wire.tail);
        const auto* parsed = std::get_if<iommu::protocol::AttachTableRequest>(&request);
        require(parsed != nullptr);
        if (parsed->fields != iommu::Status::Ok) return;
        if (iommu::Iommu::Batch(*iommu_).attach_table(parsed->endpoint, parsed->domain, parsed->table) ==
            iommu::Status::Ok)
            tables_[parsed->domain] = parsed->table.stage1;
    }

    iommu::protocol::Request parse(const void* wire, std::size_t readable) {
        iommu::protocol::ReadableBytes bytes{};
        std::memcpy(bytes.data(), wire, readable);
        // A truncated request now and then: TooShort, never an out-of-bounds read.
        const std::size_t total = fdp_.ConsumeIntegralInRange<int>(0, 15) == 0
                                      ? fdp_.ConsumeIntegralInRange<std::size_t>(0, readable)
                                      : readable;
        if (total < readable) {
            const iommu::protocol::Request shorter = iommu::protocol::parse_request(bytes, total, true);
            require(std::holds_alternative<iommu::protocol::TooShort>(shorter) ||
                    std::holds_alternative<iommu::protocol::Unparsable>(shorter));
        }
        return iommu::protocol::parse_request(bytes, readable, true);
    }

    void invalidate() {
        lkvm_viommu_req_invalidate wire{};
        wire.head.type = LKVM_VIOMMU_T_INVALIDATE;
        wire.domain = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 17);
        const bool wild = fdp_.ConsumeBool();
        wire.scope = wild ? fdp_.ConsumeIntegral<std::uint16_t>() : 1u << fdp_.ConsumeIntegralInRange<int>(0, 2);
        wire.caches = wild ? fdp_.ConsumeIntegral<std::uint16_t>() : LKVM_VIOMMU_INV_CACHE_IOTLB;
        wire.flags =
            wild ? fdp_.ConsumeIntegral<std::uint16_t>() : fdp_.ConsumeIntegralInRange<std::uint16_t>(0, 7) & 6;
        wire.pasid = wild ? fdp_.ConsumeIntegral<std::uint32_t>() : 0;
        wire.asid = wild ? fdp_.ConsumeIntegral<std::uint64_t>() : fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 3);
        wire.granule = wild ? fdp_.ConsumeIntegral<std::uint8_t>() : fdp_.ConsumeIntegralInRange<std::uint8_t>(12, 30);
        wire.virt_start = fdp_.ConsumeIntegral<std::uint64_t>();
        if (!wild && wire.granule < 64) wire.virt_start &= ~((std::uint64_t{1} << wire.granule) - 1);
        wire.nr_pages = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 1024)
                                           : fdp_.ConsumeIntegral<std::uint64_t>();
        const iommu::protocol::Request request = parse(&wire, sizeof wire - sizeof wire.tail);
        const auto* parsed = std::get_if<iommu::protocol::InvalidateRequest>(&request);
        require(parsed != nullptr);
        if (parsed->fields != iommu::Status::Ok) return;
        if (parsed->what.scope == iommu::InvalidateScope::Range) require(parsed->what.first <= parsed->what.last);
        const iommu::Status status = iommu::Iommu::Batch(*iommu_).invalidate(parsed->domain, parsed->what);
        if (status == iommu::Status::Ok && parsed->what.scope == iommu::InvalidateScope::Domain)
            require(iommu_->domain_stats(parsed->domain)->iotlb.entries == 0);
    }

    std::uint64_t iova() {
        switch (fdp_.ConsumeIntegralInRange<int>(0, 2)) {
            case 0: return fdp_.ConsumeIntegral<std::uint64_t>();
            case 1: return fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 1 << 24);
            default: return fdp_.ConsumeIntegral<std::uint32_t>() & ~0xfffULL;
        }
    }

    void translate() {
        const iommu::EndpointId endpoint = fdp_.ConsumeIntegralInRange<std::uint32_t>(1, 2);
        const std::uint64_t at = iova();
        const std::uint64_t length = fdp_.ConsumeIntegralInRange<std::uint64_t>(0, 1 << 17);
        const iommu::Access access = fdp_.ConsumeBool() ? iommu::Access::Write : iommu::Access::Read;
        CheckedVisitor visitor;
        const bool ok = iommu_->translate(endpoint, vmm::Iova{at}, length, access, visitor);
        if (ok) require(visitor.total == length);
        else require(visitor.pieces == 0);
    }

    // The walker alone, on any TCR/TTBR pair decode_stage1 accepts.
    void walk_directly() {
        const auto config = iommu::decode_stage1(
            wild_tcr(), fdp_.ConsumeBool() ? ram_address(0x1000) : fdp_.ConsumeIntegral<std::uint64_t>());
        if (!config) return;
        require(config->start_level <= 3 && config->root < (std::uint64_t{1} << config->output_bits));
        const std::uint64_t at = iova();
        const iommu::WalkResult result = iommu::walk_stage1(*config, ram_.memory(), at);
        require(result.level >= config->start_level && result.level <= 3);
        if (!result.leaf) return;
        const iommu::Stage1Leaf& leaf = *result.leaf;
        require(leaf.size_shift >= config->granule_shift && leaf.size_shift < config->input_bits);
        require(at >= leaf.iova_base && at - leaf.iova_base < leaf.size());
        require((leaf.gpa_base & (leaf.size() - 1)) == 0);
        require((leaf.gpa_base >> config->output_bits) == 0);
    }

    void map_mode_request() {
        iommu::Iommu::Batch batch(*iommu_);
        const iommu::DomainId domain = fdp_.ConsumeIntegralInRange<std::uint32_t>(0, 17);
        switch (fdp_.ConsumeIntegralInRange<int>(0, 3)) {
            case 0: batch.attach(fdp_.ConsumeIntegralInRange<std::uint32_t>(1, 3), domain, 0); break;
            case 1: batch.detach(fdp_.ConsumeIntegralInRange<std::uint32_t>(1, 3), domain); break;
            case 2: {
                const std::uint64_t start = iova() & ~0xfffULL;
                batch.map(domain, start, start + 0xfff, ram_address(0x1000), iommu::kMapRead | iommu::kMapWrite);
                break;
            }
            default: batch.unmap(domain, 0, ~std::uint64_t{0}); break;
        }
    }

    // Right after INVALIDATE by domain, a one-byte read sees exactly what a fresh walk sees.
    void check_after_invalidate() {
        const iommu::EndpointId endpoint = fdp_.ConsumeIntegralInRange<std::uint32_t>(1, 2);
        const auto stats = iommu_->endpoint_stats(endpoint);
        if (!stats || !stats->domain) return;
        const auto domain = iommu_->domain_stats(*stats->domain);
        auto it = tables_.find(*stats->domain);
        if (!domain || !domain->table || it == tables_.end()) return;
        iommu::Invalidation all;
        // A shadowed domain's host may refuse runs (S_NOMEM); the IOTLB is invalidated all the same.
        const iommu::Status status = iommu::Iommu::Batch(*iommu_).invalidate(*stats->domain, all);
        require(status == iommu::Status::Ok || domain->shadowed);
        const std::uint64_t at = iova();
        CheckedVisitor visitor;
        const bool ok = iommu_->translate(endpoint, vmm::Iova{at}, 1, iommu::Access::Read, visitor);
        const iommu::WalkResult fresh = iommu::walk_stage1(it->second, ram_.memory(), at);
        require(ok == fresh.leaf.has_value());
        if (ok) require(visitor.first == fresh.leaf->gpa_base + (at - fresh.leaf->iova_base));
    }

    // The external endpoint's host holds exactly its domain's mappings (runs, in table mode), and
    // nothing when it is in no domain.
    void check_shadow() {
        require(backend_->violations() == 0);
        const auto stats = iommu_->endpoint_stats(kExternal);
        const auto* host = backend_->state(kExternal);
        const std::size_t held = host ? host->mappings.size() : 0;
        if (!stats->domain) {
            require(held == 0);
            return;
        }
        const auto mappings = iommu_->mappings(*stats->domain);
        require(mappings && mappings->size() == held);
        for (const iommu::Mapping& m : *mappings) require(host->mappings.at(m.first.value) == m);
    }

    FuzzedDataProvider& fdp_;
    std::shared_ptr<iommu::testing::MockIommuBackend> backend_ = std::make_shared<iommu::testing::MockIommuBackend>();
    support::FakeGuestRam ram_;
    std::shared_ptr<iommu::Iommu> iommu_;
    std::map<iommu::DomainId, iommu::Stage1Config> tables_;  // the table of each table-mode domain
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    vmm::set_log_level(vmm::LogLevel::Error);  // walk faults are guest errors, logged rate-limited
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);
    Session session(fdp);
    session.run();
    return 0;
}
