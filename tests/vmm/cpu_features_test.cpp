// The vCPU feature decision (pointer authentication, SVE, PMUv3 from KVM's capabilities and the
// flags), the checks of --pmu / --sve-max-vl, the --debug line and the SVE vector-length bitmap.
#include "vmm/cpu_features.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "vmm/cli.hpp"
#include "vmm/config.hpp"

namespace {

vmm::CpuCaps all_caps() {
    return {.probed = true, .ptrauth_address = true, .ptrauth_generic = true, .sve = true, .pmu_v3 = true};
}

bool has_error(const std::vector<std::string>& errors, const std::string& text) {
    for (const std::string& e : errors)
        if (e.find(text) != std::string::npos) return true;
    return false;
}

vmm::SveVls vls_of(std::initializer_list<std::uint32_t> lengths) {
    vmm::SveVls vls{};
    for (std::uint32_t vl : lengths) {
        const std::uint32_t vq = vl / 128;
        vls[(vq - 1) / 64] |= std::uint64_t{1} << ((vq - 1) % 64);
    }
    return vls;
}

}  // namespace

TEST_CASE("Pointer authentication and SVE are on whenever KVM offers them; the PMU only with --pmu") {
    vmm::CpuFeatures f = vmm::select_cpu_features(all_caps(), {});
    CHECK(f.ptrauth);
    CHECK(f.sve);
    CHECK(f.sve_max_vl == 0);
    CHECK_FALSE(f.pmu);
    CHECK(vmm::select_cpu_features(all_caps(), {.pmu = true, .sve_max_vl = 256}) ==
          vmm::CpuFeatures{.ptrauth = true, .sve = true, .sve_max_vl = 256, .pmu = true});
}

TEST_CASE("Pointer authentication needs both of KVM's capabilities; a missing cap turns its feature off") {
    vmm::CpuCaps caps = all_caps();
    caps.ptrauth_generic = false;
    CHECK_FALSE(vmm::select_cpu_features(caps, {}).ptrauth);
    caps = all_caps();
    caps.ptrauth_address = false;
    CHECK_FALSE(vmm::select_cpu_features(caps, {}).ptrauth);
    caps = all_caps();
    caps.sve = false;
    caps.pmu_v3 = false;
    vmm::CpuFeatures f = vmm::select_cpu_features(caps, {.pmu = true, .sve_max_vl = 256});
    CHECK_FALSE(f.sve);
    CHECK(f.sve_max_vl == 0);
    CHECK_FALSE(f.pmu);
    CHECK(vmm::select_cpu_features({}, {.pmu = true}) == vmm::CpuFeatures{});
}

TEST_CASE("--sve-max-vl must be a power of two from 128 to 2048 bits, whatever the host") {
    for (std::uint32_t bad : {64u, 100u, 384u, 4096u, 1u})
        CHECK_MESSAGE(has_error(vmm::check_cpu_request({.sve_max_vl = bad}, {}),
                                "--sve-max-vl " + std::to_string(bad) + ": an SVE vector length is a power of two"),
                      bad);
    for (std::uint32_t good : {128u, 256u, 512u, 1024u, 2048u})
        CHECK(vmm::check_cpu_request({.sve_max_vl = good}, all_caps()).empty());
    CHECK(vmm::check_cpu_request({}, {}).empty());
}

TEST_CASE("--pmu and --sve-max-vl on a host whose KVM lacks the feature are one line each naming the cap") {
    vmm::CpuCaps caps{.probed = true};
    auto errors = vmm::check_cpu_request({.pmu = true, .sve_max_vl = 256}, caps);
    REQUIRE(errors.size() == 2);
    CHECK(has_error(errors, "--pmu: KVM on this host offers no guest PMU (KVM_CAP_ARM_PMU_V3 is 0"));
    CHECK(has_error(errors, "run without --pmu"));
    CHECK(has_error(errors, "--sve-max-vl 256: KVM on this host offers no SVE (KVM_CAP_ARM_SVE is 0)"));
    // Unknown host (no /dev/kvm): only the value checks.
    CHECK(vmm::check_cpu_request({.pmu = true, .sve_max_vl = 256}, {}).empty());
}

TEST_CASE("validate() reports the CPU flag problems with the others") {
    vmm::VmConfig c;
    c.kernel = "/nonexistent-kernel";
    c.cpu = {.pmu = true, .sve_max_vl = 3};
    vmm::kvm::HostLimits host{.max_vcpus = 8, .ipa_bits = 40, .cpu = {.probed = true}};
    auto errors = vmm::validate(c, host);
    CHECK(has_error(errors, "-k/--kernel"));
    CHECK(has_error(errors, "--pmu: KVM on this host offers no guest PMU"));
    CHECK(has_error(errors, "--sve-max-vl 3: an SVE vector length is a power of two"));
}

TEST_CASE("--debug names each CPU feature, on or off, and why") {
    vmm::CpuCaps caps = all_caps();
    CHECK(vmm::describe(vmm::select_cpu_features(caps, {.pmu = true}), caps, {.pmu = true}) ==
          "vCPU features: pointer authentication on (address and generic); SVE on, the host's longest vectors; "
          "PMUv3 on, overflow interrupt PPI 7");
    CHECK(vmm::describe(vmm::select_cpu_features(caps, {.sve_max_vl = 512}), caps, {.sve_max_vl = 512}) ==
          "vCPU features: pointer authentication on (address and generic); SVE on, at most 512-bit vectors "
          "(--sve-max-vl); PMUv3 off (--pmu not given)");
    vmm::CpuCaps none{.probed = true};
    CHECK(vmm::describe(vmm::select_cpu_features(none, {.pmu = true}), none, {.pmu = true}) ==
          "vCPU features: pointer authentication off (no KVM_CAP_ARM_PTRAUTH_ADDRESS and KVM_CAP_ARM_PTRAUTH_GENERIC); "
          "SVE off (no KVM_CAP_ARM_SVE); PMUv3 off (no KVM_CAP_ARM_PMU_V3)");
    none.ptrauth_address = true;
    CHECK(vmm::describe(vmm::select_cpu_features(none, {}), none, {})
              .find("pointer authentication off (no KVM_CAP_ARM_PTRAUTH_GENERIC);") != std::string::npos);
}

TEST_CASE("The SVE vector-length bitmap: bit VQ-1 is 128*VQ bits; limiting keeps the lengths up to the cap") {
    const vmm::SveVls host = vls_of({128, 256, 512, 1024, 2048});
    CHECK(vmm::sve_lengths(host) == std::vector<std::uint32_t>{128, 256, 512, 1024, 2048});
    CHECK(host[0] == 0x808b);  // VQ 1, 2, 4, 8, 16: bits 0, 1, 3, 7, 15
    auto limited = vmm::limit_sve_lengths(host, 512);
    REQUIRE(limited);
    CHECK(vmm::sve_lengths(*limited) == std::vector<std::uint32_t>{128, 256, 512});
    CHECK(vmm::limit_sve_lengths(host, 2048) == host);
    // A length the host lacks, a zero or an out-of-range cap: refused (KVM would refuse it too).
    CHECK_FALSE(vmm::limit_sve_lengths(vls_of({128, 256}), 512));
    CHECK_FALSE(vmm::limit_sve_lengths(host, 0));
    CHECK_FALSE(vmm::limit_sve_lengths(host, 200));
    CHECK_FALSE(vmm::limit_sve_lengths(host, 128 * 513));
    // The last bit of the last word: VQ 512.
    vmm::SveVls top{};
    top[7] = std::uint64_t{1} << 63;
    CHECK(vmm::sve_lengths(top) == std::vector<std::uint32_t>{128 * 512});
    CHECK(vmm::limit_sve_lengths(top, 128 * 512) == top);
}

TEST_CASE("lkvm run --pmu --sve-max-vl 256 reach the VmConfig; the defaults ask for neither") {
    const char* args[] = {"lkvm", "run", "-k", "Image", "--pmu", "--sve-max-vl", "256"};
    auto command = vmm::cli::parse(7, args);
    auto* run = std::get_if<vmm::cli::Run>(&command);
    REQUIRE(run != nullptr);
    CHECK(run->config.cpu == vmm::CpuRequest{.pmu = true, .sve_max_vl = 256});
    const char* plain[] = {"lkvm", "run", "-k", "Image"};
    command = vmm::cli::parse(4, plain);
    REQUIRE(std::get_if<vmm::cli::Run>(&command) != nullptr);
    CHECK(std::get<vmm::cli::Run>(command).config.cpu == vmm::CpuRequest{});
    const char* negative[] = {"lkvm", "run", "-k", "Image", "--sve-max-vl", "-256"};
    command = vmm::cli::parse(6, negative);
    REQUIRE(std::get_if<vmm::cli::Exit>(&command) != nullptr);
    CHECK(std::get<vmm::cli::Exit>(command).code == 2);
}
