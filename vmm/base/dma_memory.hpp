// The view of guest memory a DMA-capable device gets: bus addresses (Iova) that are either used
// as guest-physical addresses one to one, or translated by an IOMMU with permission checks.
// Every virtqueue and device buffer access goes through here: it is the one shared path where
// translation happens, so device models contain no translation code.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>

#include "vmm/base/guest_memory.hpp"
#include "vmm/base/translator.hpp"

namespace vmm {

// Receives host pointers for the pieces of one DMA access, in bus-address order.
class HostVisitor {
public:
    virtual bool visit(std::uint8_t* host, std::uint64_t length) = 0;

protected:
    ~HostVisitor() = default;
};

class DmaMemory {
public:
    // Untranslated: bus address == guest-physical address.
    explicit DmaMemory(const GuestMemory& memory) : memory_(&memory) {}
    // Translated through `translator` (the endpoint's view of the IOMMU).
    DmaMemory(const GuestMemory& memory, std::shared_ptr<const vmm::Translator> translator)
        : memory_(&memory), translator_(std::move(translator)) {}

    bool is_translated() const { return translator_ != nullptr; }

    // Calls `visitor` with host pointers covering [addr, addr + length), after checking the whole
    // range translates with `access` and lies in guest RAM. false (visitor not called) otherwise.
    bool access(Iova addr, std::uint64_t length, vmm::Access access, HostVisitor& visitor) const;

    bool read(Iova addr, std::span<std::uint8_t> out) const;
    bool write(Iova addr, std::span<const std::uint8_t> in) const;

    template <class T>
    std::optional<T> read_obj(Iova addr) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        if (!read(addr, {reinterpret_cast<std::uint8_t*>(&value), sizeof(T)})) return std::nullopt;
        return value;
    }
    template <class T>
    bool write_obj(Iova addr, const T& value) const {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(addr, {reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)});
    }

private:
    const GuestMemory* memory_;
    std::shared_ptr<const vmm::Translator> translator_;
};

}  // namespace vmm
