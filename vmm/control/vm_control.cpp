#include "vmm/control/vm_control.hpp"

#include <unistd.h>

#include <array>
#include <cinttypes>
#include <cstdio>

#include "vmm/base/log.hpp"

namespace vmm {
namespace {

// "none" or "INVAL:2,RANGE:1": every status but OK that was answered.
std::string errors_of(const iommu::StatusCounts& counts) {
    std::string out;
    for (std::size_t i = 0; i < counts.size(); ++i) {
        if (i == static_cast<std::size_t>(iommu::Status::Ok) || counts[i] == 0) continue;
        if (!out.empty()) out += ',';
        append_format(out, "%s:%" PRIu64, iommu::status_name(static_cast<iommu::Status>(i)), counts[i]);
    }
    return out.empty() ? "none" : out;
}

bool can_fail_requests(const VmControlDevice& device) {
    return device.transport->with_device([](const virtio::Device& model) { return model.can_fail_requests(); });
}

std::string endpoints_of(const std::vector<iommu::EndpointId>& endpoints) {
    std::string out;
    for (iommu::EndpointId id : endpoints) out += (out.empty() ? "" : ",") + std::to_string(id);
    return out.empty() ? "none" : out;
}

}  // namespace

VmControl::VmControl(VmControlParts parts) : parts_(std::move(parts)) {}

const VmControlDevice* VmControl::find_device(std::string_view target) const {
    const auto number = parse_control_number(target);
    for (const VmControlDevice& device : parts_.devices) {
        if (device.label == target) return &device;
        if (number && device.endpoint && *device.endpoint == *number) return &device;
    }
    return nullptr;
}

std::string VmControl::endpoint_list() const {
    std::string out;
    for (const VmControlDevice& device : parts_.devices)
        if (device.endpoint)
            out += (out.empty() ? "" : ", ") + std::to_string(*device.endpoint) + " (" + device.label + ")";
    return out.empty() ? "none" : out;
}

void VmControl::stop() {
    if (parts_.stop) parts_.stop();
}

std::string VmControl::stat() {
    std::string out;
    append_format(out, "vm %s pid=%d vcpus=%u ram_mib=%" PRIu64 " devices=%zu viommu=%s\n", parts_.name.c_str(),
                  static_cast<int>(::getpid()), parts_.cpus, parts_.mem_mib, parts_.devices.size(),
                  parts_.iommu ? "virtio" : "none");
    for (const VmControlDevice& device : parts_.devices) {
        append_format(out, "device %s slot=%u type=%.*s", device.label.c_str(), device.slot,
                      static_cast<int>(device.transport->name().size()), device.transport->name().data());
        if (device.endpoint) append_format(out, " endpoint=%u", *device.endpoint);
        virtio::Description description;
        device.transport->with_device([&](const virtio::Device& model) { model.describe(description); });
        out += description.text();
        out += '\n';
    }
    if (parts_.serial) out += parts_.serial();
    if (parts_.vfio) out += parts_.vfio();
    if (!parts_.iommu) {
        out += "iommu none: this VM has no vIOMMU (start it with --viommu virtio for IOMMU counters)\n";
        return out;
    }
    const iommu::IommuStats s = parts_.iommu->stats();
    append_format(out,
                  "iommu endpoints=%" PRIu64 " domains=%" PRIu64 " live_mappings=%" PRIu64 " maps=%" PRIu64
                  " unmaps=%" PRIu64 " faults=%" PRIu64 " unattached=%s",
                  s.endpoints, s.domains, s.live_mappings, s.maps, s.unmaps, s.faults,
                  s.unattached_bypass ? "bypass" : "blocked");
    if (parts_.viommu) {
        const iommu::VirtioIommuStats v = parts_.viommu.with([](iommu::VirtioIommu& viommu) { return viommu.stats(); });
        append_format(out,
                      " requests=%" PRIu64 " errors=%s faults_posted=%" PRIu64 " faults_dropped=%" PRIu64
                      " map_refusals=%" PRIu64 " refusals_reported=%" PRIu64 " refusals_dropped=%" PRIu64
                      " (rate_limited=%" PRIu64 " no_buffer=%" PRIu64 ")",
                      v.requests, errors_of(v.statuses).c_str(), v.faults_posted, v.faults_dropped, v.map_refusals,
                      v.refusals_reported, v.refusals_rate_limited + v.refusals_no_buffer, v.refusals_rate_limited,
                      v.refusals_no_buffer);
        // Requests by type: "requests per MiB" of a benchmark is the difference of two snapshots.
        static constexpr std::array<const char*, iommu::kRequestTypeCount> kTypeNames{
            nullptr, "attach", "detach", "map", "unmap", "probe", "attach_table", "invalidate"};
        for (std::size_t type = 1; type < kTypeNames.size(); ++type)
            append_format(out, " req_%s=%" PRIu64, kTypeNames[type], v.requests_by_type[type]);
    }
    out += '\n';
    for (const iommu::DomainStats& d : parts_.iommu->all_domain_stats()) {
        append_format(out,
                      "domain %u endpoints=%s bypass=%s live_mappings=%" PRIu64 " maps=%" PRIu64 " unmaps=%" PRIu64
                      " faults=%" PRIu64 " errors=%s mode=%s",
                      d.id, endpoints_of(d.endpoints).c_str(), d.bypass ? "yes" : "no", d.live_mappings, d.maps,
                      d.unmaps, d.faults, errors_of(d.statuses).c_str(), d.table ? "table" : "map");
        if (d.table) {
            // The table-mode domain's walker and IOTLB (iommu/page_tables.md).
            const iommu::IotlbStats& t = d.iotlb;
            append_format(out,
                          " asid=%u walks=%" PRIu64 " walk_faults=%" PRIu64 " iotlb_hits=%" PRIu64
                          " iotlb_misses=%" PRIu64 " iotlb_entries=%" PRIu64 " iotlb_capacity=%" PRIu64
                          " iotlb_flushes=%" PRIu64 " inv_domain=%" PRIu64 " inv_asid=%" PRIu64 " inv_range=%" PRIu64,
                          d.asid, t.walks, t.walk_faults, t.hits, t.misses, t.entries, t.capacity, t.capacity_flushes,
                          t.invalidations_domain, t.invalidations_asid, t.invalidations_range);
            // Its shadow in the host IOMMUs of assigned functions (page_tables.md, "Shadowed endpoints").
            if (d.shadowed) {
                const iommu::ShadowStats& h = d.shadow;
                append_format(
                    out,
                    " shadow=yes host_runs=%" PRIu64 " host_kib=%" PRIu64 " run_maps=%" PRIu64 " run_unmaps=%" PRIu64
                    " shadow_refusals=%" PRIu64 " rewalks=%" PRIu64 " walk_reads=%" PRIu64 " walks_cut=%" PRIu64,
                    h.runs, h.bytes >> 10, h.run_maps, h.run_unmaps, h.refusals, h.rewalks, h.walk_reads, h.walks_cut);
            }
        }
        out += '\n';
    }
    for (const VmControlDevice& device : parts_.devices) {
        if (!device.endpoint) continue;
        const auto e = parts_.iommu->endpoint_stats(*device.endpoint);
        if (!e) continue;
        bool bypass = s.unattached_bypass;
        if (e->domain) {
            const auto d = parts_.iommu->domain_stats(*e->domain);
            bypass = d && d->bypass;
        }
        append_format(out,
                      "endpoint %u device=%s domain=%s bypass=%s faults=%" PRIu64 " live_mappings=%" PRIu64
                      " maps=%" PRIu64 " unmaps=%" PRIu64 " translations=%" PRIu64 " attaches=%" PRIu64
                      " detaches=%" PRIu64 " errors=%s\n",
                      e->id, device.label.c_str(),
                      e->domain ? std::to_string(*e->domain).c_str() : (e->blocked ? "none(blocked)" : "none"),
                      bypass && !e->blocked ? "yes" : "no", e->faults, e->live_mappings, e->maps, e->unmaps,
                      e->translations, e->attaches, e->detaches, errors_of(e->statuses).c_str());
    }
    return out;
}

ControlResponse VmControl::dump() {
    if (!parts_.iommu)
        return ControlResponse::failure("VM '" + parts_.name + "' has no vIOMMU (start it with --viommu virtio)");
    return ControlResponse::success({}, parts_.iommu->dump());
}

ControlResponse VmControl::inject_fault(std::uint32_t endpoint, bool write, std::uint64_t address) {
    if (!parts_.iommu || !parts_.viommu)
        return ControlResponse::failure("VM '" + parts_.name +
                                        "' has no vIOMMU to report a fault (start it with --viommu virtio)");
    if (!parts_.iommu->has_endpoint(endpoint))
        return ControlResponse::failure("no endpoint " + std::to_string(endpoint) +
                                        "; the endpoints are: " + endpoint_list());
    const iommu::Fault fault{
        endpoint, iommu::FaultReason::Mapping, write ? vmm::Access::Write : vmm::Access::Read, address, {}};
    const bool posted = parts_.viommu.with([&](iommu::VirtioIommu& viommu) {
        const std::uint64_t before = viommu.stats().faults_posted;
        viommu.post_fault(fault);
        return viommu.stats().faults_posted > before;
    });
    char what[96];
    std::snprintf(what, sizeof what, "%s at %#" PRIx64, write ? "write" : "read", address);
    if (!posted)
        return ControlResponse::failure("fault for endpoint " + std::to_string(endpoint) + " (" + what +
                                        ") dropped: the guest's virtio-iommu driver has no event buffer posted");
    return ControlResponse::success("fault reported for endpoint " + std::to_string(endpoint) + " (" + what +
                                    "); the guest logs 'page fault from EP " + std::to_string(endpoint) + "'");
}

ControlResponse VmControl::fail_next(std::string_view target, unsigned count) {
    const VmControlDevice* device = find_device(target);
    if (!device) {
        std::string disks;
        for (const VmControlDevice& d : parts_.devices)
            if (can_fail_requests(d)) disks += (disks.empty() ? "" : ", ") + d.label;
        return ControlResponse::failure("fail-next: no device '" + std::string(target.substr(0, 40)) +
                                        "'; name a disk (" + (disks.empty() ? "this VM has none" : disks) +
                                        ") or its endpoint id (" + endpoint_list() + ")");
    }
    if (!can_fail_requests(*device))
        return ControlResponse::failure("fail-next: " + device->label + " is a " +
                                        std::string(device->transport->name()) +
                                        "; only virtio-blk requests can be failed");
    device->transport->with_device([&](virtio::Device& model) { model.fail_next_requests(count); });
    std::string detail =
        "the next " + std::to_string(count) + " request" + (count == 1 ? "" : "s") + " of " + device->label;
    if (device->endpoint) detail += " (endpoint " + std::to_string(*device->endpoint) + ")";
    return ControlResponse::success(detail + " will fail with VIRTIO_BLK_S_IOERR");
}

}  // namespace vmm
