#include "vmm/base/dma_memory.hpp"

#include <cstring>
#include <vector>

namespace vmm {
namespace {

// Turns translated guest-physical fragments into host pointers. All fragments are resolved
// before the caller's visitor sees any of them, so an access that is partly outside guest RAM
// has no side effect.
class FragmentsToHost final : public vmm::FragmentVisitor {
public:
    explicit FragmentsToHost(const GuestMemory& memory) : memory_(memory) {}
    bool visit(GuestPhysAddr gpa, std::uint64_t length) override {
        std::uint8_t* host = memory_.host_pointer(gpa, length);
        if (!host) return false;
        pieces_.push_back({host, length});
        return true;
    }
    bool deliver(HostVisitor& visitor) const {
        for (const auto& piece : pieces_)
            if (!visitor.visit(piece.host, piece.length)) return false;
        return true;
    }

private:
    struct Piece {
        std::uint8_t* host;
        std::uint64_t length;
    };
    const GuestMemory& memory_;
    std::vector<Piece> pieces_;
};

class CopyOut final : public HostVisitor {
public:
    explicit CopyOut(std::span<std::uint8_t> out) : out_(out) {}
    bool visit(std::uint8_t* host, std::uint64_t length) override {
        std::memcpy(out_.data() + done_, host, length);
        done_ += length;
        return true;
    }

private:
    std::span<std::uint8_t> out_;
    std::size_t done_ = 0;
};

class CopyIn final : public HostVisitor {
public:
    explicit CopyIn(std::span<const std::uint8_t> in) : in_(in) {}
    bool visit(std::uint8_t* host, std::uint64_t length) override {
        std::memcpy(host, in_.data() + done_, length);
        done_ += length;
        return true;
    }

private:
    std::span<const std::uint8_t> in_;
    std::size_t done_ = 0;
};

}  // namespace

bool DmaMemory::access(Iova addr, std::uint64_t length, vmm::Access access, HostVisitor& visitor) const {
    if (length == 0) return false;
    if (!translator_) {
        std::uint8_t* host = memory_->host_pointer(GuestPhysAddr{addr.value}, length);
        return host && visitor.visit(host, length);
    }
    // Resolve every fragment first, then deliver, both inside translate() so the mapping cannot
    // be unmapped while data moves.
    FragmentsToHost resolver(*memory_);
    bool delivered = false;
    struct ResolveThenDeliver final : vmm::FragmentVisitor {
        FragmentsToHost& resolver;
        HostVisitor& visitor;
        std::uint64_t remaining;
        bool& delivered;
        ResolveThenDeliver(FragmentsToHost& r, HostVisitor& v, std::uint64_t len, bool& d)
            : resolver(r), visitor(v), remaining(len), delivered(d) {}
        bool visit(GuestPhysAddr gpa, std::uint64_t len) override {
            if (len == 0 || len > remaining || !resolver.visit(gpa, len)) return false;
            remaining -= len;
            // The last fragment: everything resolved, deliver while still inside translate().
            if (remaining == 0) delivered = resolver.deliver(visitor);
            return remaining != 0 || delivered;
        }
    } walk(resolver, visitor, length, delivered);
    return translator_->translate(addr, length, access, walk) && delivered;
}

bool DmaMemory::read(Iova addr, std::span<std::uint8_t> out) const {
    if (out.empty()) return true;
    CopyOut copy(out);
    return access(addr, out.size(), vmm::Access::Read, copy);
}

bool DmaMemory::write(Iova addr, std::span<const std::uint8_t> in) const {
    if (in.empty()) return true;
    CopyIn copy(in);
    return access(addr, in.size(), vmm::Access::Write, copy);
}

}  // namespace vmm
