// VmControl over real devices: a virtio-iommu (harness) with endpoints 1 and 2, and a virtio-blk
// on endpoint 1 driven by the fake driver. stat's counters follow MAP/UNMAP, `fault` reaches the
// eventq, `fail-next` fails exactly the next blk request, and a VM without a vIOMMU says so.
#include "vmm/control/vm_control.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_blk.h>
#include <unistd.h>

#include <cstdlib>

#include "tests/iommu/viommu_harness.hpp"
#include "tests/support/fake_net_backend.hpp"
#include "tests/support/stage1_tables.hpp"
#include "virtio/blk.hpp"
#include "virtio/block_backend.hpp"
#include "virtio/net.hpp"

namespace {

struct TempImage {
    std::string path;
    TempImage() {
        char name[] = "/tmp/lkvm-control-vm-XXXXXX";
        const int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, 64 * 1024) == 0);
        ::close(fd);
        path = name;
    }
    ~TempImage() { ::unlink(path.c_str()); }
};

struct Rig {
    explicit Rig(viommu_test::Options options = {}) : viommu(std::move(options)) {}
    TempImage image;
    viommu_test::Harness viommu;
    support::FakeDriver disk{
        std::make_unique<virtio::Blk>(virtio::FileBackend::open(image.path, false), virtio::BlkOptions{})};
    int stops = 0;

    vmm::VmControlParts parts(bool with_iommu) {
        vmm::VmControlParts p;
        p.name = "vm1";
        p.cpus = 2;
        p.mem_mib = 256;
        if (with_iommu) p.devices.push_back({.slot = 0, .label = "iommu", .transport = &viommu.driver->transport()});
        p.devices.push_back({.slot = with_iommu ? 1u : 0u,
                             .label = "blk0",
                             .transport = &disk.transport(),
                             .endpoint = with_iommu ? std::optional<std::uint32_t>(1) : std::nullopt});
        if (with_iommu) {
            p.iommu = viommu.iommu;
            p.viommu = virtio::DeviceHandle<iommu::VirtioIommu>(viommu.driver->transport(), *viommu.device);
        }
        p.stop = [this] { ++stops; };
        return p;
    }

    // One blk IN request of 512 bytes; returns its status byte.
    std::uint8_t read_sector() {
        virtio_blk_outhdr h{};
        h.type = VIRTIO_BLK_T_IN;
        const std::uint64_t hdr = disk.ram().alloc(sizeof h);
        disk.ram().write_obj(hdr, h);
        const std::uint64_t data = disk.ram().alloc(512);
        const std::uint64_t status = disk.ram().alloc(1);
        disk.ram().write_obj<std::uint8_t>(status, 0xee);
        disk.add_chain(0, {support::Segment{hdr, sizeof h, false}, support::Segment{data, 512, true},
                           support::Segment{status, 1, true}});
        disk.kick(0);
        REQUIRE(disk.pop_used(0));
        return disk.ram().read_obj<std::uint8_t>(status);
    }
};

bool has_line(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// A 4K table in the rig's RAM mapping `pages` pages from IOVA 0x1000 to 0x4000'0000 onwards,
// attached by `endpoint` as domain 3 with ASID 7.
support::Stage1Tables attach_small_table(Rig& rig, std::uint32_t endpoint, std::uint64_t pages = 1) {
    support::Stage1Tables tables(rig.viommu.ram(), 12, 48);
    for (std::uint64_t i = 0; i < pages; ++i) tables.map(0x1000 + i * 0x1000, 0x4000'0000 + i * 0x1000);
    REQUIRE(rig.viommu.attach_table(endpoint, 3, {LKVM_VIOMMU_FMT_ARM_LPAE_S1, 7, tables.tcr(), tables.root(), 0}) ==
            VIRTIO_IOMMU_S_OK);
    return tables;
}

}  // namespace

TEST_CASE("VmControl stat: VM info, devices, and per-domain / per-endpoint counters that follow MAP and UNMAP") {
    Rig rig;
    REQUIRE(rig.viommu.start());
    REQUIRE(rig.disk.start());
    vmm::VmControl control(rig.parts(true));

    std::string before = control.stat();
    CHECK(has_line(before,
                   "vm vm1 pid=" + std::to_string(::getpid()) + " vcpus=2 ram_mib=256 devices=2 viommu=virtio\n"));
    CHECK(has_line(before, "device iommu slot=0 type=virtio-iommu\n"));
    CHECK(has_line(before, "device blk0 slot=1 type=virtio-blk endpoint=1 forced_failures=0\n"));
    CHECK(has_line(before, "iommu endpoints=2 domains=0 live_mappings=0 maps=0 unmaps=0"));
    CHECK(has_line(before, "endpoint 1 device=blk0 domain=none bypass=yes"));  // boot bypass

    REQUIRE(rig.viommu.attach(1, 7) == VIRTIO_IOMMU_S_OK);
    REQUIRE(rig.viommu.map(7, 0x10000, 0x10fff, 0x4000'0000, iommu::kMapRead | iommu::kMapWrite) == VIRTIO_IOMMU_S_OK);
    REQUIRE(rig.viommu.map(7, 0x20000, 0x20fff, 0x4000'1000, iommu::kMapRead) == VIRTIO_IOMMU_S_OK);
    REQUIRE(rig.viommu.map(7, 0x20000, 0x20fff, 0x4000'1000, iommu::kMapRead) != VIRTIO_IOMMU_S_OK);  // overlap
    std::string mapped = control.stat();
    CHECK(has_line(mapped, "domain 7 endpoints=1 bypass=no live_mappings=2 maps=2 unmaps=0 faults=0 errors="));
    CHECK_FALSE(
        has_line(mapped, "domain 7 endpoints=1 bypass=no live_mappings=2 maps=2 unmaps=0 faults=0 errors=none"));
    CHECK(has_line(mapped, " mode=map\n"));
    // Requests by type (page-table handover's benchmark divides their differences by MiB moved).
    CHECK(has_line(mapped,
                   " req_attach=1 req_detach=0 req_map=3 req_unmap=0 req_probe=0 req_attach_table=0 "
                   "req_invalidate=0\n"));
    CHECK(has_line(mapped,
                   "endpoint 1 device=blk0 domain=7 bypass=no faults=0 live_mappings=2 maps=2 unmaps=0 translations=0 "
                   "attaches=1"));

    CHECK(rig.viommu.gpa_of(1, 0x20010) == 0x4000'1010u);
    CHECK_FALSE(rig.viommu.gpa_of(1, 0x30000));
    CHECK(has_line(control.stat(), "faults=1 live_mappings=2 maps=2 unmaps=0 translations=2 attaches=1"));
    REQUIRE(rig.viommu.unmap(7, 0x10000, 0x10fff) == VIRTIO_IOMMU_S_OK);
    CHECK(
        has_line(control.stat(), "endpoint 1 device=blk0 domain=7 bypass=no faults=1 live_mappings=1 maps=2 unmaps=1"));

    vmm::ControlResponse dump = control.dump();
    CHECK(dump.ok);
    CHECK(has_line(dump.body, "domain 7: 1 mappings"));
    CHECK_FALSE(has_line(dump.body, "(table)"));
    CHECK(has_line(dump.body, "[0x20000, 0x20fff] -> 0x40001000 r-"));

    control.stop();
    CHECK(rig.stops == 1);
}

TEST_CASE("VmControl fault: reaches the eventq when the driver posted a buffer; unknown endpoints are named") {
    Rig rig;
    REQUIRE(rig.viommu.start());
    vmm::VmControl control(rig.parts(true));

    vmm::ControlResponse dropped = control.inject_fault(1, false, 0x1000);
    CHECK_FALSE(dropped.ok);
    CHECK(has_line(dropped.detail, "no event buffer"));

    rig.viommu.post_event_buffer();
    vmm::ControlResponse posted = control.inject_fault(1, true, 0xabc000);
    CHECK(posted.ok);
    CHECK(has_line(posted.detail, "page fault from EP 1"));
    auto event = rig.viommu.next_event();
    REQUIRE(event);
    CHECK(event->fault.endpoint == 1);
    CHECK(event->fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
    CHECK(event->fault.address == 0xabc000);
    CHECK(event->fault.flags == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));
    CHECK(has_line(control.stat(), "faults_posted=1 faults_dropped=1"));

    vmm::ControlResponse unknown = control.inject_fault(99, false, 0);
    CHECK_FALSE(unknown.ok);
    CHECK(unknown.detail == "no endpoint 99; the endpoints are: 1 (blk0)");
}

TEST_CASE("VmControl fail-next: exactly the next blk requests fail with IOERR, then the disk works again") {
    Rig rig;
    REQUIRE(rig.disk.start());
    vmm::VmControl control(rig.parts(false));
    CHECK(rig.read_sector() == VIRTIO_BLK_S_OK);
    vmm::ControlResponse armed = control.fail_next("blk0", 2);
    CHECK(armed.ok);
    CHECK(armed.detail == "the next 2 requests of blk0 will fail with VIRTIO_BLK_S_IOERR");
    CHECK(rig.read_sector() == VIRTIO_BLK_S_IOERR);
    CHECK(rig.read_sector() == VIRTIO_BLK_S_IOERR);
    CHECK(rig.read_sector() == VIRTIO_BLK_S_OK);
    CHECK(has_line(control.stat(), "device blk0 slot=0 type=virtio-blk forced_failures=2"));

    CHECK_FALSE(control.fail_next("blk9", 1).ok);
    CHECK(has_line(control.fail_next("nope", 1).detail, "name a disk (blk0)"));
}

TEST_CASE("VmControl fail-next by endpoint id; non-blk devices refused") {
    Rig rig;
    REQUIRE(rig.viommu.start());
    REQUIRE(rig.disk.start());
    vmm::VmControl control(rig.parts(true));
    CHECK(control.fail_next("1", 1).detail ==
          "the next 1 request of blk0 (endpoint 1) will fail with VIRTIO_BLK_S_IOERR");
    CHECK(rig.read_sector() == VIRTIO_BLK_S_IOERR);
    vmm::ControlResponse iommu_dev = control.fail_next("iommu", 1);
    CHECK_FALSE(iommu_dev.ok);
    CHECK(has_line(iommu_dev.detail, "only virtio-blk requests can be failed"));
}

TEST_CASE("VmControl without a vIOMMU: stat says so, dump and fault refuse") {
    Rig rig;
    vmm::VmControl control(rig.parts(false));
    const std::string stat = control.stat();
    CHECK(has_line(stat, "viommu=none"));
    CHECK(has_line(stat, "iommu none: this VM has no vIOMMU"));
    CHECK_FALSE(control.dump().ok);
    CHECK(has_line(control.inject_fault(1, false, 0).detail, "has no vIOMMU"));
}

TEST_CASE("VmControl stat lists the assigned functions' DMA state, asked afresh on every stat") {
    Rig rig;
    vmm::VmControlParts parts = rig.parts(false);
    int calls = 0;
    parts.vfio = [&calls] {
        ++calls;
        return "vfio group 7: identity, 1 guest mappings, " + std::to_string(calls) + "/65535 host entries\n";
    };
    vmm::VmControl control(std::move(parts));
    CHECK(has_line(control.stat(), "vfio group 7: identity, 1 guest mappings, 1/65535 host entries"));
    const std::string second = control.stat();
    CHECK(has_line(second, "2/65535 host entries"));
    CHECK(second.find("vfio group 7") < second.find("iommu none"));
}

TEST_CASE("VmControl stat shows the serial console's drops before the vIOMMU counters") {
    Rig rig;
    vmm::VmControlParts parts = rig.parts(false);
    std::uint64_t dropped = 0;
    parts.serial = [&dropped] { return "serial uart rx_dropped=" + std::to_string(dropped) + " output_dropped=0\n"; };
    vmm::VmControl control(std::move(parts));
    CHECK(has_line(control.stat(), "serial uart rx_dropped=0 output_dropped=0"));
    dropped = 12;  // asked afresh on every stat
    const std::string second = control.stat();
    CHECK(has_line(second, "serial uart rx_dropped=12"));
    CHECK(second.find("serial uart") < second.find("iommu none"));
}

TEST_CASE("VmControl stat shows each NIC's packet, byte and drop counters") {
    auto backend = std::make_shared<support::FakeNetBackend::State>();
    support::FakeDriver nic{std::make_unique<virtio::Net>(std::make_unique<support::FakeNetBackend>(backend))};
    REQUIRE(nic.start());
    backend->send_capacity = 1;
    for (int i = 0; i < 2; ++i) {
        const std::uint64_t buf = nic.ram().alloc(12 + 60);
        nic.add_chain(1, {support::Segment{buf, 12 + 60, false}});
    }
    nic.kick(1);
    vmm::VmControlParts p;
    p.name = "vm1";
    p.devices.push_back({.slot = 0, .label = "net0", .transport = &nic.transport(), .endpoint = {}});
    vmm::VmControl control(std::move(p));
    const std::string stat = control.stat();
    INFO(stat);
    CHECK(stat.find("device net0 slot=0 type=virtio-net") != std::string::npos);
    CHECK(stat.find("tx_packets=1 tx_bytes=60 tx_dropped=1 tx_errors=0") != std::string::npos);
    CHECK(stat.find("rx_packets=0") != std::string::npos);
    CHECK(stat.find("backend=\"fake\"") != std::string::npos);
}

TEST_CASE("VmControl stat: a table-mode domain shows its mode, walker, IOTLB and INVALIDATE counters") {
    viommu_test::Options options;
    options.config.tables = true;
    Rig rig(options);
    REQUIRE(rig.viommu.start());
    vmm::VmControl control(rig.parts(true));
    attach_small_table(rig, 1);
    CHECK(rig.viommu.gpa_of(1, 0x1010) == 0x4000'0010u);  // a walk
    CHECK(rig.viommu.gpa_of(1, 0x1020) == 0x4000'0020u);  // a hit
    CHECK_FALSE(rig.viommu.gpa_of(1, 0x2000));            // a walk that faults
    REQUIRE(rig.viommu.invalidate(3, viommu_test::invalidate_range(0x1000, 1)) == VIRTIO_IOMMU_S_OK);
    const std::string stat = control.stat();
    CHECK(has_line(stat,
                   "domain 3 endpoints=1 bypass=no live_mappings=0 maps=0 unmaps=0 faults=1 errors=none "
                   "mode=table asid=7 walks=2 walk_faults=1 iotlb_hits=1 iotlb_misses=2 iotlb_entries=0 "
                   "iotlb_capacity=8192 iotlb_flushes=0 inv_domain=0 inv_asid=0 inv_range=1\n"));
    CHECK(has_line(stat, " req_attach_table=1 req_invalidate=1\n"));
    CHECK(has_line(control.dump().body, "domain 3 (table): asid=7"));
}

TEST_CASE("VmControl stat: a shadowed table-mode domain shows its host runs, refusals and re-walks") {
    auto backend = std::make_shared<iommu::testing::MockIommuBackend>();
    viommu_test::Options options = viommu_test::with_backend(backend);
    options.config.tables = true;
    Rig rig(options);
    REQUIRE(rig.viommu.start());
    vmm::VmControl control(rig.parts(true));
    support::Stage1Tables tables = attach_small_table(rig, 10, 2);
    backend->set_budget(1);
    tables.map(0x8000, 0x4000'8000);
    REQUIRE(rig.viommu.invalidate(3, viommu_test::invalidate_range(0x8000, 1)) == VIRTIO_IOMMU_S_NOMEM);
    const std::string stat = control.stat();
    CHECK(has_line(stat,
                   " inv_range=1 shadow=yes host_runs=1 host_kib=8 run_maps=1 run_unmaps=0 shadow_refusals=1 "
                   "rewalks=2 walk_reads=2052 walks_cut=0\n"));
    CHECK(has_line(control.dump().body, " shadow: host_runs=1 host_kib=8 "));
    REQUIRE(rig.viommu.detach(10, 3) == VIRTIO_IOMMU_S_OK);
    CHECK_FALSE(has_line(control.stat(), "shadow=yes"));
}
