// The seam between a DMA-capable device model and the IOMMU that translates its accesses.
// Leaf interface: it depends on nothing but address types, so devices never see the IOMMU model.
// It belongs to the ground of vmm (with DmaMemory, its user); the IOMMU model implements it under
// the names iommu::Translator, iommu::FragmentVisitor and iommu::Access.
#pragma once

#include <cstdint>

#include "vmm/base/address.hpp"

namespace vmm {

enum class Access : std::uint8_t { Read = 1, Write = 2 };

// Receives the guest-physical fragments of one translated IOVA range, in IOVA order.
class FragmentVisitor {
public:
    // Return false to stop the walk (the whole access then fails).
    virtual bool visit(GuestPhysAddr gpa, std::uint64_t length) = 0;

protected:
    ~FragmentVisitor() = default;
};

// IOVA -> guest-physical translation for one endpoint (one device behind the IOMMU).
// Called from device threads; implementations are thread-safe.
class Translator {
public:
    virtual ~Translator() = default;

    // Checks that every byte of [iova, iova + length) may be accessed with `access`; if so, calls
    // `visitor` once per contiguous guest-physical fragment while keeping the translation stable,
    // so an UNMAP that overlaps cannot complete until the access is over (strict unmap). If any
    // byte is untranslatable the visitor is not called, a fault is reported for the endpoint, and
    // the result is false. length 0 is rejected.
    virtual bool translate(Iova iova, std::uint64_t length, Access access, FragmentVisitor& visitor) const = 0;
};

}  // namespace vmm

namespace iommu {
using vmm::Access;
using vmm::FragmentVisitor;
using vmm::Translator;
}  // namespace iommu
