// --viommu: option parsing and checks, and the machine's wiring (ViommuSetup) of a virtio-iommu
// and an emulated virtio-blk behind it: device tree, ACCESS_PLATFORM, translated DMA, faults
// answered in the blk protocol and reported on the eventq.
#include "vmm/viommu_setup.hpp"

#include <doctest/doctest.h>
#include <libfdt.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_iommu.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "devices/gic_v3_node.hpp"
#include "fdt/machine_tree.hpp"
#include "iommu/uapi/virtio_iommu_tables.h"
#include "tests/support/fake_driver.hpp"
#include "tests/support/stage1_tables.hpp"
#include "virtio/blk.hpp"
#include "virtio/features.hpp"
#include "vmm/base/layout.hpp"
#include "vmm/cli.hpp"

namespace layout = vmm::layout;
using support::FakeDriver;
using support::Segment;

namespace {

vmm::ViommuConfig parsed(const char* spec) {
    vmm::ViommuConfig c;
    const std::string error = vmm::parse_viommu(spec, c);
    CHECK_MESSAGE(error.empty(), error);
    return c;
}

std::string parse_error(const char* spec) {
    vmm::ViommuConfig c;
    const vmm::ViommuConfig before = c;
    std::string error = vmm::parse_viommu(spec, c);
    CHECK(c == before);  // nothing half-applied
    return error;
}

vmm::cli::Command parse_cli(std::vector<const char*> args) {
    args.insert(args.begin(), "lkvm");
    return vmm::cli::parse(static_cast<int>(args.size()), args.data());
}

}  // namespace

TEST_CASE("--viommu alone puts everything behind a 4K-granule vIOMMU with boot bypass and 48 input bits") {
    vmm::ViommuConfig c = parsed("");
    CHECK(c.virtio);
    CHECK(c.vfio);
    CHECK(c.window.page_size_mask == ~std::uint64_t{0xfff});
    CHECK(c.boot_bypass);
    CHECK(c.window.input_first == 0);
    CHECK(c.window.input_last == (std::uint64_t{1} << 48) - 1);
    CHECK(vmm::check_viommu(c).empty());
    CHECK(parsed("all") == c);
    CHECK(parsed("virtio,vfio") == c);
    CHECK(parsed("bypass=1") == c);  // options only: every device kind
}

TEST_CASE("--viommu device kinds and options") {
    vmm::ViommuConfig c = parsed("virtio,page_size=64K,bypass=0,input_bits=40");
    CHECK(c.virtio);
    CHECK_FALSE(c.vfio);
    CHECK(c.window.page_size_mask == ~std::uint64_t{0xffff});
    CHECK_FALSE(c.boot_bypass);
    CHECK(c.window.input_last == (std::uint64_t{1} << 40) - 1);
    CHECK(parsed("vfio").virtio == false);
    CHECK(parsed("page_size=0x40201000").window.page_size_mask == 0x40201000);
    CHECK(parsed("page_size=2M").window.page_size_mask == ~std::uint64_t{0x1fffff});
    c = parsed("virtio,input_range=0x10000-0xffffffff");
    CHECK(c.window.input_first == 0x10000);
    CHECK(c.window.input_last == 0xffffffff);
    CHECK(parsed("input_bits=64").window.input_last == ~std::uint64_t{0});
}

TEST_CASE("--viommu syntax errors name the bad item") {
    CHECK(parse_error("pci").find("unknown device kind 'pci'") != std::string::npos);
    CHECK(parse_error("virtio,bypass=2").find("bypass") != std::string::npos);
    CHECK(parse_error("page_size=3K").find("page_size") != std::string::npos);
    CHECK(parse_error("page_size=zz").find("page_size") != std::string::npos);
    CHECK(parse_error("input_bits=8").find("input_bits") != std::string::npos);
    CHECK(parse_error("input_bits=65").find("input_bits") != std::string::npos);
    CHECK(parse_error("input_range=5").find("input_range") != std::string::npos);
    CHECK(parse_error("input_range=0-0xfff,input_bits=32").find("not both") != std::string::npos);
    CHECK(parse_error("virtio,,bypass=1").find("empty item") != std::string::npos);
    CHECK(parse_error("colour=blue").find("unknown option 'colour'") != std::string::npos);
    for (const char* spec : {"pci", "bypass=2", "page_size=3K", "colour=blue"})
        CHECK(parse_error(spec).find('\n') == std::string::npos);
}

TEST_CASE("check_viommu rejects masks and ranges Linux cannot use") {
    vmm::ViommuConfig c;
    c.window.page_size_mask = 0;
    CHECK(vmm::check_viommu(c).size() == 1);
    c = parsed("page_size=0x100000");  // 1 MiB granule
    CHECK(vmm::check_viommu(c).size() == 1);
    // 2M: Linux's virtio-iommu driver refuses a granule above its page size; the line says so and
    // names what works.
    c = parsed("page_size=2M");
    REQUIRE(vmm::check_viommu(c).size() == 1);
    CHECK(vmm::check_viommu(c)[0] ==
          "--viommu page_size=0xffffffffffe00000: granule 2 MiB is larger than any arm64 page, and Linux refuses a "
          "granule above its page size; use page_size=4K (the default: the guest still maps a large contiguous "
          "buffer in one MAP) or 64K");
    c = parsed("input_range=0x2000-0x1000");
    CHECK(vmm::check_viommu(c).size() == 1);
    c = parsed("input_range=0x800-0xffffffff");  // start inside a 4 KiB page
    CHECK(vmm::check_viommu(c).size() == 1);
    c = parsed("page_size=64K,input_range=0-0xffff");
    CHECK(vmm::check_viommu(c).empty());
}

TEST_CASE("--viommu tables=on|off offers page-table handover; off by default; bad values name the option") {
    CHECK_FALSE(parsed("").tables);
    CHECK(parsed("tables=on").tables);
    CHECK(parsed("virtio,tables=on").tables);
    CHECK_FALSE(parsed("virtio,tables=on").vfio);
    CHECK_FALSE(parsed("tables=on,tables=off").tables);
    CHECK(parse_error("tables=yes").find("use tables=on or tables=off") != std::string::npos);
    CHECK(parse_error("table=on").find("tables=") != std::string::npos);  // the list of options names it
    CHECK(vmm::describe(parsed("virtio,tables=on")).find("tables=on") != std::string::npos);
    CHECK(vmm::device_config(parsed("tables=on")).tables);
    CHECK_FALSE(vmm::device_config(parsed("")).tables);
}

TEST_CASE("lkvm run --viommu: bare, with a value, and a usage error for a bad value") {
    auto command = parse_cli({"run", "-k", "Image", "--viommu", "-d", "a.img"});
    auto* run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    REQUIRE(run->config.viommu);
    CHECK(*run->config.viommu == vmm::ViommuConfig{});
    CHECK(run->config.disks.size() == 1);

    command = parse_cli({"run", "-k", "Image", "--viommu", "virtio,bypass=0"});
    run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    REQUIRE(run->config.viommu);
    CHECK_FALSE(run->config.viommu->boot_bypass);
    CHECK_FALSE(run->config.viommu->vfio);

    command = parse_cli({"run", "-k", "Image", "--viommu=virtio,page_size=64K"});
    run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run);
    CHECK(run->config.viommu->window.page_size_mask == ~std::uint64_t{0xffff});

    command = parse_cli({"run", "-k", "Image"});
    CHECK_FALSE(std::get<vmm::cli::Run>(command).config.viommu);

    command = parse_cli({"run", "-k", "Image", "--viommu", "virtio,bypass=yes"});
    auto* exit = std::get_if<vmm::cli::Exit>(&command);
    REQUIRE(exit);
    CHECK(exit->code == 2);
    CHECK(exit->err.find("bypass") != std::string::npos);
    CHECK(exit->err.find('\n') == exit->err.size() - 1);  // one line
}

namespace {

constexpr std::size_t kDiskSize = 64 * 1024;

struct TempDisk {
    std::string path;
    TempDisk() {
        char name[] = "/tmp/lkvm-viommu-test-XXXXXX";
        const int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        std::vector<std::uint8_t> bytes(kDiskSize);
        for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 13 + 1);
        REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
        ::close(fd);
        path = name;
    }
    ~TempDisk() { ::unlink(path.c_str()); }
};

// What Machine does for `--viommu -d disk`: the virtio-iommu in slot 0, the disk in slot 1.
struct Rig {
    TempDisk disk;
    std::shared_ptr<support::FakeGuestRam> guest_ram = std::make_shared<support::FakeGuestRam>();
    vmm::ViommuSetup setup;
    std::unique_ptr<FakeDriver> viommu;
    std::unique_ptr<FakeDriver> blk;
    devices::VirtioMmioNode viommu_node{layout::virtio_mmio_slot(0), layout::virtio_mmio_spi(0)};
    devices::VirtioMmioNode blk_node{layout::virtio_mmio_slot(1), layout::virtio_mmio_spi(1)};
    std::optional<iommu::EndpointId> endpoint;

    explicit Rig(vmm::ViommuConfig config = {}) : setup(config, guest_ram->memory()) {
        viommu = std::make_unique<FakeDriver>(setup.take_device(), guest_ram);
        setup.connect(viommu->transport(), viommu_node);
        blk = std::make_unique<FakeDriver>(
            std::make_unique<virtio::Blk>(virtio::FileBackend::open(disk.path, false), virtio::BlkOptions{}),
            viommu->shared_ram());
        endpoint = setup.add_virtio_endpoint(1, blk->transport(), blk_node);
    }
    ~Rig() {
        setup.stop_polling();  // the poller goes before the transport it polls (as in ~Machine)
        blk.reset();           // endpoints first, as the Machine's slots go after the setup's fault path
    }
    support::FakeGuestRam& ram() { return viommu->ram(); }

    // With the first 2 MiB of RAM translated one to one and nothing above: a read into mapped
    // RAM works, one at RAM + 3 MiB answers IOERR and posts a MAPPING write fault into the event
    // buffer at `event`, and the device keeps running.
    void check_dma(std::uint64_t event) {
        const std::uint64_t mapped = ram().alloc(512);
        REQUIRE(mapped + 512 <= ram().base() + (2 << 20));
        CHECK(read(mapped, 512) == VIRTIO_BLK_S_OK);
        CHECK(ram().read_obj<std::uint8_t>(mapped + 1) == 14);

        const std::uint64_t unmapped = ram().base() + (3 << 20);
        CHECK(read(unmapped, 512) == VIRTIO_BLK_S_IOERR);
        auto used = viommu->pop_used(1);
        REQUIRE(used);
        CHECK(used->len == 24);
        const auto fault = ram().read_obj<virtio_iommu_fault>(event);
        CHECK(fault.reason == VIRTIO_IOMMU_FAULT_R_MAPPING);
        CHECK(fault.endpoint == 0x10001);
        CHECK(fault.address == unmapped);
        CHECK(fault.flags == (VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS));

        // Still running: the next mapped request succeeds.
        CHECK(read(mapped, 512) == VIRTIO_BLK_S_OK);
    }

    // A virtio-blk IN request for `length` bytes of sector 0 into `data`; returns the status byte.
    std::uint8_t read(std::uint64_t data, std::uint32_t length) {
        virtio_blk_outhdr h{};
        h.type = VIRTIO_BLK_T_IN;
        const std::uint64_t hdr = ram().alloc(sizeof h);
        const std::uint64_t status = ram().alloc(1);
        ram().write_obj(hdr, h);
        ram().write_obj<std::uint8_t>(status, 0xee);
        blk->add_chain(0, {Segment{hdr, sizeof h, false}, Segment{data, length, true}, Segment{status, 1, true}});
        blk->kick(0);
        auto used = blk->pop_used(0);
        REQUIRE(used);
        return ram().read_obj<std::uint8_t>(status);
    }
};

}  // namespace

TEST_CASE("ViommuSetup: the device tree names the vIOMMU and endpoint 0x10000 + slot") {
    Rig rig;
    REQUIRE(rig.endpoint);
    CHECK(*rig.endpoint == 0x10001);
    CHECK(*rig.endpoint == layout::virtio_mmio_endpoint(1));
    fdt::MachineDescription m{*layout::ram(64 << 20), {0}, "", std::nullopt, "", {}, {&rig.viommu_node, &rig.blk_node}};
    auto blob = fdt::build_machine_tree(m);
    const void* fdt = blob.data();
    const int viommu = fdt_path_offset(fdt, "/virtio_mmio@2000000");
    const int blk = fdt_path_offset(fdt, "/virtio_mmio@2000200");
    REQUIRE(viommu >= 0);
    REQUIRE(blk >= 0);
    int len = 0;
    const auto* cells = static_cast<const fdt32_t*>(fdt_getprop(fdt, viommu, "#iommu-cells", &len));
    REQUIRE(len == 4);
    CHECK(fdt32_to_cpu(cells[0]) == 1);
    CHECK(fdt_getprop(fdt, viommu, "iommus", nullptr) == nullptr);  // its own DMA is not translated
    const auto* iommus = static_cast<const fdt32_t*>(fdt_getprop(fdt, blk, "iommus", &len));
    REQUIRE(len == 8);
    CHECK(fdt_node_offset_by_phandle(fdt, fdt32_to_cpu(iommus[0])) == viommu);
    CHECK(fdt32_to_cpu(iommus[1]) == 0x10001);
}

TEST_CASE("ViommuSetup: --viommu vfio leaves the virtio devices untranslated and out of the tree") {
    vmm::ViommuConfig config;
    config.virtio = false;
    Rig rig(config);
    CHECK_FALSE(rig.endpoint);
    CHECK_FALSE(rig.setup.model()->has_endpoint(0x10001));
    CHECK((rig.blk->device_features() & virtio::feature_bit(VIRTIO_F_ACCESS_PLATFORM)) == 0);
}

TEST_CASE(
    "ViommuSetup: an endpoint offers ACCESS_PLATFORM; translated DMA works where mapped, and a fault "
    "answers IOERR, reaches the eventq and leaves the device running") {
    vmm::ViommuConfig config;
    config.boot_bypass = false;
    Rig rig(config);
    CHECK((rig.blk->device_features() & virtio::feature_bit(VIRTIO_F_ACCESS_PLATFORM)) != 0);
    REQUIRE(rig.viommu->start());
    // Eventq buffers, posted without a kick (CONFORMANCE.md L10).
    const std::uint64_t event = rig.ram().alloc(64);
    rig.viommu->add_chain(1, {Segment{event, 24, true}});

    // Identity-map the first 2 MiB of RAM (rings, headers) for the endpoint; the rest stays unmapped.
    auto& model = *rig.setup.model();
    const std::uint64_t base = rig.ram().base();
    REQUIRE(model.attach(0x10001, 1, 0) == iommu::Status::Ok);
    REQUIRE(model.map(1, base, base + (2 << 20) - 1, base, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE) ==
            iommu::Status::Ok);
    REQUIRE(rig.blk->start());
    CHECK((rig.blk->negotiated() & virtio::feature_bit(VIRTIO_F_ACCESS_PLATFORM)) != 0);

    rig.check_dma(event);
    CHECK((rig.blk->status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
    CHECK(rig.setup.dump().find("65537") != std::string::npos);  // endpoint 0x10001
}

TEST_CASE(
    "D69 ViommuSetup with tables=on: virtio-blk DMA goes through the guest's stage-1 table; a walk fault "
    "answers IOERR and reaches the eventq") {
    vmm::ViommuConfig config;
    config.boot_bypass = false;
    config.tables = true;
    Rig rig(config);
    REQUIRE(rig.viommu->start());
    REQUIRE((rig.viommu->negotiated() & (std::uint64_t{1} << LKVM_VIOMMU_F_ATTACH_TABLE)) != 0);
    const std::uint64_t event = rig.ram().alloc(64);
    rig.viommu->add_chain(1, {Segment{event, 24, true}});

    // The guest's table: the first 2 MiB of RAM identity-mapped by one block; nothing else.
    const std::uint64_t base = rig.ram().base();
    support::Stage1Tables tables(rig.ram(), 12, 48);
    tables.map(base, base, 2);
    auto& model = *rig.setup.model();
    iommu::TableDescriptor table;
    table.format = LKVM_VIOMMU_FMT_ARM_LPAE_S1;
    table.tcr = tables.tcr();
    table.ttbr = tables.root();
    table.stage1 = *iommu::decode_stage1(table.tcr, table.ttbr);
    REQUIRE(iommu::Iommu::Batch(model).attach_table(0x10001, 1, table) == iommu::Status::Ok);
    REQUIRE(rig.blk->start());

    rig.check_dma(event);

    const auto domain = model.domain_stats(1);
    REQUIRE(domain);
    CHECK(domain->table);
    // The block is walked once and then hit; a faulting walk is not cached, so it walks each time.
    CHECK(domain->iotlb.walk_faults >= 1);
    CHECK(domain->iotlb.walks == 1 + domain->iotlb.walk_faults);
    CHECK(domain->iotlb.hits > 0);
    CHECK(rig.setup.dump().find("domain 1 (table)") != std::string::npos);
}

TEST_CASE("ViommuSetup: a driver that refuses ACCESS_PLATFORM gets untranslated DMA (virtio 1.2 6.1)") {
    vmm::ViommuConfig config;
    config.boot_bypass = false;  // translation would block everything
    Rig rig(config);
    REQUIRE(rig.blk->start(~virtio::feature_bit(VIRTIO_F_ACCESS_PLATFORM)));
    const std::uint64_t data = rig.ram().alloc(512);
    CHECK(rig.read(data, 512) == VIRTIO_BLK_S_OK);
}

TEST_CASE("ViommuSetup: dtc decompiles the tree with #iommu-cells and iommus = <&viommu 0x10001>") {
    if (std::system("command -v dtc >/dev/null 2>&1") != 0) {
        MESSAGE("dtc not installed; skipped");
        return;
    }
    Rig rig;
    devices::GicV3Node gic{layout::kGicDist, layout::gic_redistributors(1), layout::kGicIts};
    fdt::MachineDescription m{
        *layout::ram(64 << 20), {0}, "", std::nullopt, "", {}, {&gic, &rig.viommu_node, &rig.blk_node}};
    auto blob = fdt::build_machine_tree(m);
    char dtb[] = "/tmp/lkvm-viommu-dtb-XXXXXX";
    const int fd = ::mkstemp(dtb);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, blob.data(), blob.size()) == static_cast<ssize_t>(blob.size()));
    ::close(fd);
    const std::string dts = std::string(dtb) + ".dts", err = std::string(dtb) + ".err";
    const int rc = std::system(("dtc -I dtb -O dts -o " + dts + " " + dtb + " 2>" + err).c_str());
    auto slurp = [](const std::string& path) {
        std::string text;
        if (FILE* f = std::fopen(path.c_str(), "r")) {
            char buf[4096];
            std::size_t n;
            while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
            std::fclose(f);
        }
        return text;
    };
    const std::string text = slurp(dts), warnings = slurp(err);
    ::unlink(dtb);
    ::unlink(dts.c_str());
    ::unlink(err.c_str());
    CHECK(rc == 0);
    CHECK_MESSAGE(warnings.empty(), warnings);
    CHECK(text.find("#iommu-cells = <0x01>;") != std::string::npos);
    CHECK(text.find("iommus = <0x03 0x10001>;") != std::string::npos);
}

TEST_CASE("--viommu poll=US sets the request-queue poller's idle window; 0 is off; bad values name the option") {
    vmm::ViommuConfig config;
    CHECK(vmm::parse_viommu("virtio,poll=150", config).empty());
    CHECK(config.poll_us == 150);
    CHECK(config.virtio);
    CHECK_FALSE(config.vfio);
    CHECK(vmm::parse_viommu("poll=0", config).empty());
    CHECK(config.poll_us == 0);
    CHECK(vmm::parse_viommu("poll=1000000", config).empty());
    for (const char* bad : {"poll=", "poll=-1", "poll=1000001", "poll=fast", "poll=10us"}) {
        CAPTURE(bad);
        vmm::ViommuConfig c;
        const std::string error = vmm::parse_viommu(bad, c);
        CHECK(error.find("poll") != std::string::npos);
        CHECK(c == vmm::ViommuConfig{});  // untouched
    }
    vmm::ViommuConfig defaults;
    CHECK(defaults.poll_us == vmm::kDefaultViommuPollUs);
    CHECK(vmm::describe(config).find("poll=1000000us") != std::string::npos);
}

TEST_CASE("ViommuSetup with poll=US serves the virtio-iommu request queue without kicks after the first") {
    vmm::ViommuConfig config;
    config.poll_us = 1'000'000;  // a long window: the whole test is one polling phase
    Rig rig(config);
    REQUIRE(rig.viommu->start());
    // ATTACH endpoint 0x10001 to domain 1 (kicked: the first request), then MAPs without kicks.
    auto request = [&](std::span<const std::uint8_t> bytes, bool kick) {
        const std::uint64_t in = rig.ram().alloc(bytes.size());
        const std::uint64_t tail = rig.ram().alloc(4);
        rig.ram().write(in, bytes);
        rig.viommu->add_chain(0,
                              {Segment{in, static_cast<std::uint32_t>(bytes.size()), false}, Segment{tail, 4, true}});
        if (kick) rig.viommu->kick(0);
        // Waits for the poller to serve it; the bound only keeps a broken build from hanging.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        std::optional<vring_used_elem> used;
        while (!(used = rig.viommu->pop_used(0)) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        REQUIRE(used);
        CHECK(used->len == 4);
        return rig.ram().read_obj<std::uint8_t>(tail);
    };
    virtio_iommu_req_attach attach{};
    attach.head.type = VIRTIO_IOMMU_T_ATTACH;
    attach.domain = 1;
    attach.endpoint = 0x10001;
    CHECK(request({reinterpret_cast<const std::uint8_t*>(&attach), sizeof attach - 4}, true) == VIRTIO_IOMMU_S_OK);
    for (std::uint64_t page = 0; page < 20; ++page) {
        virtio_iommu_req_map map{};
        map.head.type = VIRTIO_IOMMU_T_MAP;
        map.domain = 1;
        map.virt_start = 0x100000 + page * 4096;
        map.virt_end = map.virt_start + 4095;
        map.phys_start = rig.ram().base() + page * 4096;
        map.flags = VIRTIO_IOMMU_MAP_F_READ;
        CHECK(request({reinterpret_cast<const std::uint8_t*>(&map), sizeof map - 4}, false) == VIRTIO_IOMMU_S_OK);
    }
    CHECK(rig.setup.model()->mappings(1)->size() == 20);
    CHECK(rig.setup.dump().find("request-queue poller:") != std::string::npos);
    rig.setup.stop_polling();
    rig.setup.stop_polling();
}
