#include "vmm/cpu_features.hpp"

#include <bit>

namespace vmm {
namespace {

constexpr std::uint32_t kVqBits = 128;  // one SVE quadword

std::string missing(bool has, const char* cap) { return has ? "" : cap; }

}  // namespace

CpuFeatures select_cpu_features(const CpuCaps& caps, const CpuRequest& request) {
    CpuFeatures f;
    f.ptrauth = caps.ptrauth_address && caps.ptrauth_generic;
    f.sve = caps.sve;
    if (f.sve) f.sve_max_vl = request.sve_max_vl;
    f.pmu = request.pmu && caps.pmu_v3;
    return f;
}

std::vector<std::string> check_cpu_request(const CpuRequest& request, const CpuCaps& caps) {
    std::vector<std::string> errors;
    const std::uint32_t vl = request.sve_max_vl;
    if (vl != 0 && (vl < kSveMinVl || vl > kSveMaxVl || !std::has_single_bit(vl)))
        errors.push_back("--sve-max-vl " + std::to_string(vl) +
                         ": an SVE vector length is a power of two from 128 to 2048 bits, e.g. --sve-max-vl 256");
    if (!caps.probed) return errors;
    if (request.pmu && !caps.pmu_v3)
        errors.push_back(
            "--pmu: KVM on this host offers no guest PMU (KVM_CAP_ARM_PMU_V3 is 0: no PMU driver for "
            "the host's CPUs, or KVM in protected mode); run without --pmu");
    if (vl != 0 && !caps.sve)
        errors.push_back("--sve-max-vl " + std::to_string(vl) +
                         ": KVM on this host offers no SVE (KVM_CAP_ARM_SVE is 0); run without --sve-max-vl");
    return errors;
}

std::string describe(const CpuFeatures& f, const CpuCaps& caps, const CpuRequest& request) {
    std::string line = "vCPU features: pointer authentication ";
    if (f.ptrauth) {
        line += "on (address and generic)";
    } else {
        std::string lacks = missing(caps.ptrauth_address, "KVM_CAP_ARM_PTRAUTH_ADDRESS");
        const std::string generic = missing(caps.ptrauth_generic, "KVM_CAP_ARM_PTRAUTH_GENERIC");
        if (!lacks.empty() && !generic.empty()) lacks += " and ";
        line += "off (no " + lacks + generic + ")";
    }
    line += "; SVE ";
    if (!f.sve) line += "off (no KVM_CAP_ARM_SVE)";
    else if (f.sve_max_vl != 0) line += "on, at most " + std::to_string(f.sve_max_vl) + "-bit vectors (--sve-max-vl)";
    else line += "on, the host's longest vectors";
    line += "; PMUv3 ";
    if (f.pmu) line += "on, overflow interrupt PPI " + std::to_string(kPmuPpi);
    else if (request.pmu) line += "off (no KVM_CAP_ARM_PMU_V3)";
    else line += "off (--pmu not given)";
    return line;
}

std::vector<std::uint32_t> sve_lengths(const SveVls& vls) {
    std::vector<std::uint32_t> lengths;
    for (std::uint32_t vq = 1; vq <= vls.size() * 64; ++vq)
        if (vls[(vq - 1) / 64] >> ((vq - 1) % 64) & 1) lengths.push_back(vq * kVqBits);
    return lengths;
}

std::optional<SveVls> limit_sve_lengths(const SveVls& vls, std::uint32_t max_vl) {
    if (max_vl == 0 || max_vl % kVqBits != 0 || max_vl / kVqBits > vls.size() * 64) return std::nullopt;
    const std::uint32_t max_vq = max_vl / kVqBits;
    if (!(vls[(max_vq - 1) / 64] >> ((max_vq - 1) % 64) & 1)) return std::nullopt;
    SveVls limited{};
    for (std::uint32_t vq = 1; vq <= max_vq; ++vq)
        limited[(vq - 1) / 64] |= vls[(vq - 1) / 64] & (std::uint64_t{1} << ((vq - 1) % 64));
    return limited;
}

}  // namespace vmm
