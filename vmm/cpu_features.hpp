// The optional arm64 vCPU features lkvm turns on: pointer authentication and SVE whenever the
// host's KVM offers them (as kvmtool does), the PMUv3 on request (--pmu). Here is the decision
// (which features, given KVM's capabilities and the flags) and the checks of the flags, as plain
// data; vmm/kvm/ applies the result to the vCPUs. Documentation/virt/kvm/api.rst
// (KVM_ARM_VCPU_INIT features, KVM_ARM_VCPU_FINALIZE, KVM_REG_ARM64_SVE_VLS) and
// Documentation/virt/kvm/devices/vcpu.rst (KVM_ARM_VCPU_PMU_V3_CTRL).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vmm {

// KVM_CHECK_EXTENSION answers for the vCPU features (vmm::kvm::System fills them).
struct CpuCaps {
    bool probed = false;           // false: no /dev/kvm asked (nothing is known)
    bool ptrauth_address = false;  // KVM_CAP_ARM_PTRAUTH_ADDRESS
    bool ptrauth_generic = false;  // KVM_CAP_ARM_PTRAUTH_GENERIC
    bool sve = false;              // KVM_CAP_ARM_SVE
    bool pmu_v3 = false;           // KVM_CAP_ARM_PMU_V3
};

// What the command line asked for.
struct CpuRequest {
    bool pmu = false;              // --pmu
    std::uint32_t sve_max_vl = 0;  // --sve-max-vl BITS; 0: the host's maximum

    bool operator==(const CpuRequest&) const = default;
};

// What the vCPUs get.
struct CpuFeatures {
    bool ptrauth = false;  // address and generic authentication, always both
    bool sve = false;
    std::uint32_t sve_max_vl = 0;  // with sve: the cap in bits; 0: the host's maximum
    bool pmu = false;

    bool operator==(const CpuFeatures&) const = default;
};

// SVE vector lengths in bits the architecture allows: powers of two from 128 to 2048.
inline constexpr std::uint32_t kSveMinVl = 128;
inline constexpr std::uint32_t kSveMaxVl = 2048;

// The PMU's overflow interrupt: PPI 7 (INTID 23), the same on every vCPU.
inline constexpr std::uint32_t kPmuPpi = 7;

// Pointer authentication needs both capabilities (KVM refuses one without the other); SVE
// whenever KVM has it; the PMU when asked and offered.
CpuFeatures select_cpu_features(const CpuCaps& caps, const CpuRequest& request);

// Problems with --pmu / --sve-max-vl, one line each naming the flag and the fix. The value
// checks always run; the checks against the host only when `caps.probed`.
std::vector<std::string> check_cpu_request(const CpuRequest& request, const CpuCaps& caps);

// One line for --debug: each feature, on or off, and why.
std::string describe(const CpuFeatures& features, const CpuCaps& caps, const CpuRequest& request);

// KVM_REG_ARM64_SVE_VLS: bit (VQ - 1) set when the vCPU may use VQ quadwords (VL = 128 * VQ
// bits); 8 words cover VQ 1..512 (KVM_ARM64_SVE_VLS_WORDS).
using SveVls = std::array<std::uint64_t, 8>;

// The vector lengths in `vls`, in bits, ascending.
std::vector<std::uint32_t> sve_lengths(const SveVls& vls);
// `vls` without the lengths above `max_vl` bits; nullopt when the host does not offer `max_vl`
// itself (the guest's maximum must be one the hardware implements).
std::optional<SveVls> limit_sve_lengths(const SveVls& vls, std::uint32_t max_vl);

}  // namespace vmm
