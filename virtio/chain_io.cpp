// Stream access to descriptor chains through DmaMemory (virtio 1.2 section 2.7.4).
#include "virtio/chain_io.hpp"

namespace virtio {

bool ChainReader::read(std::span<std::uint8_t> out) {
    return advance(out.size(), Moves::Yes, [&](vmm::Iova addr, std::uint64_t done, std::uint64_t piece) {
        return memory().read(addr, out.subspan(done, piece));
    });
}

bool ChainReader::skip(std::uint64_t length) {
    return advance(length, Moves::No, [](vmm::Iova, std::uint64_t, std::uint64_t) { return true; });
}

bool ChainReader::visit(std::uint64_t length, vmm::HostVisitor& visitor) {
    return advance(length, Moves::Yes, [&](vmm::Iova addr, std::uint64_t, std::uint64_t piece) {
        return memory().access(addr, piece, vmm::Access::Read, visitor);
    });
}

bool ChainWriter::write(std::span<const std::uint8_t> in) {
    return advance(in.size(), Moves::Yes, [&](vmm::Iova addr, std::uint64_t done, std::uint64_t piece) {
        if (!memory().write(addr, in.subspan(done, piece))) return false;
        written_ += piece;
        return true;
    });
}

bool ChainWriter::skip(std::uint64_t length) {
    return advance(length, Moves::No, [](vmm::Iova, std::uint64_t, std::uint64_t) { return true; });
}

bool ChainWriter::visit(std::uint64_t length, vmm::HostVisitor& visitor) {
    return advance(length, Moves::Yes, [&](vmm::Iova addr, std::uint64_t, std::uint64_t piece) {
        if (!memory().access(addr, piece, vmm::Access::Write, visitor)) return false;
        written_ += piece;
        return true;
    });
}

}  // namespace virtio
