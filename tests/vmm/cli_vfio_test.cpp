// --vfio-pci and --viommu vfio on the command line and in validate() (the VFIO parts of vmm/cli.cpp
// and vmm/config.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "vmm/base/layout.hpp"
#include "vmm/cli.hpp"
#include "vmm/config.hpp"

namespace {

vmm::VmConfig run_config(std::vector<const char*> args) {
    args.insert(args.begin(), "lkvm");
    auto command = vmm::cli::parse(static_cast<int>(args.size()), args.data());
    auto* run = std::get_if<vmm::cli::Run>(&command);
    if (!run) FAIL("expected a run command, got: " << std::get<vmm::cli::Exit>(command).err);
    return run->config;
}

bool has_error(const std::vector<std::string>& errors, const std::string& text) {
    return std::any_of(errors.begin(), errors.end(),
                       [&](const std::string& e) { return e.find(text) != std::string::npos; });
}

}  // namespace

TEST_CASE("--vfio-pci is repeatable and keeps the BDFs as given; --viommu vfio selects only them") {
    auto c =
        run_config({"run", "-k", "Image", "--vfio-pci", "0000:00:01.0", "--vfio-pci", "00:02.0", "--viommu", "vfio"});
    CHECK(c.vfio_pci == std::vector<std::string>{"0000:00:01.0", "00:02.0"});
    REQUIRE(c.viommu);
    CHECK(c.viommu->vfio);
    CHECK_FALSE(c.viommu->virtio);
    auto plain = run_config({"run", "-k", "Image"});
    CHECK(plain.vfio_pci.empty());
}

TEST_CASE("validate: --viommu vfio needs an assigned device; the bare --viommu does not") {
    auto c = run_config({"run", "-k", "/nonexistent/Image", "--viommu", "vfio"});
    CHECK(has_error(vmm::validate(c, {}), "--viommu vfio: no assigned device"));
    c.vfio_pci = {"0000:00:01.0"};
    CHECK_FALSE(has_error(vmm::validate(c, {}), "--viommu vfio"));
    auto all = run_config({"run", "-k", "/nonexistent/Image", "--viommu"});
    CHECK_FALSE(has_error(vmm::validate(all, {}), "--viommu vfio"));
}

TEST_CASE("validate: with --vfio-pci the IPA must reach the 64-bit PCIe window") {
    auto c = run_config({"run", "-k", "/nonexistent/Image", "-m", "256", "--vfio-pci", "0000:00:01.0"});
    const unsigned needed = vmm::layout::ipa_bits_for(256 << 20, true);
    CHECK(needed == 40);
    CHECK(has_error(vmm::validate(c, {8, needed - 1}), "-m/--mem 256 needs 40-bit"));
    CHECK_FALSE(has_error(vmm::validate(c, {8, needed}), "-m/--mem"));
}

// A malformed BDF is a usage error at parse time, before any KVM setup, and the message
// shows the expected format.
TEST_CASE("--vfio-pci with a malformed BDF is rejected at parse time with the expected format") {
    for (const char* bad : {"zz:00.0", "00:20.0", "00:03.8", "0000:00:03", "3.0", ""}) {
        CAPTURE(bad);
        std::vector<const char*> args{"lkvm", "run", "-k", "Image", "--vfio-pci", bad};
        auto command = vmm::cli::parse(static_cast<int>(args.size()), args.data());
        auto* exit = std::get_if<vmm::cli::Exit>(&command);
        REQUIRE(exit);
        CHECK(exit->code == 2);
        CHECK(exit->err.find(std::string("--vfio-pci ") + bad + ": not a PCI address") != std::string::npos);
        CHECK(exit->err.find("DDDD:BB:DD.F or BB:DD.F") != std::string::npos);
    }
    auto good = run_config({"run", "-k", "Image", "--vfio-pci", "0000:0A:1f.7", "--vfio-pci", "01:00.0"});
    CHECK(good.vfio_pci.size() == 2);
}
