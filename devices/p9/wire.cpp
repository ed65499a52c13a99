#include "devices/p9/wire.hpp"

#include <cstring>
#include <limits>

namespace devices::p9 {

bool Decoder::take(std::uint64_t length, const std::uint8_t** out) {
    if (!ok_ || length > bytes_.size() - pos_) {
        ok_ = false;
        return false;
    }
    *out = bytes_.data() + pos_;
    pos_ += static_cast<std::size_t>(length);
    return true;
}

namespace {
template <class T>
T load_le(const std::uint8_t* p) {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | static_cast<T>(static_cast<T>(p[i]) << (8 * i)));
    return v;
}
template <class T>
void store_le(std::uint8_t* p, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
}  // namespace

std::uint8_t Decoder::u8() {
    const std::uint8_t* p;
    return take(1, &p) ? p[0] : 0;
}
std::uint16_t Decoder::u16() {
    const std::uint8_t* p;
    return take(2, &p) ? load_le<std::uint16_t>(p) : 0;
}
std::uint32_t Decoder::u32() {
    const std::uint8_t* p;
    return take(4, &p) ? load_le<std::uint32_t>(p) : 0;
}
std::uint64_t Decoder::u64() {
    const std::uint8_t* p;
    return take(8, &p) ? load_le<std::uint64_t>(p) : 0;
}
std::string_view Decoder::str() {
    const std::uint16_t length = u16();
    const std::uint8_t* p;
    if (!take(length, &p)) return {};
    return {reinterpret_cast<const char*>(p), length};
}
std::span<const std::uint8_t> Decoder::bytes(std::uint64_t length) {
    const std::uint8_t* p;
    if (!take(length, &p)) return {};
    return {p, static_cast<std::size_t>(length)};
}

std::optional<Header> parse_header(std::span<const std::uint8_t> message) {
    if (message.size() < kHeaderSize) return std::nullopt;
    Header h{load_le<std::uint32_t>(message.data()), message[4], load_le<std::uint16_t>(message.data() + 5)};
    if (h.size != message.size()) return std::nullopt;
    return h;
}

Encoder::Encoder(std::vector<std::uint8_t>& out, std::uint32_t limit, Type type, std::uint16_t tag)
    : out_(out), limit_(limit) {
    out_.clear();
    if (limit_ < kHeaderSize) {
        ok_ = false;
        return;
    }
    u32(0);
    u8(static_cast<std::uint8_t>(type));
    u16(tag);
}

bool Encoder::grow(std::uint64_t length) {
    if (!ok_ || length > limit_ - out_.size()) {
        ok_ = false;
        return false;
    }
    out_.resize(out_.size() + static_cast<std::size_t>(length));
    return true;
}

void Encoder::u8(std::uint8_t v) {
    if (grow(1)) out_.back() = v;
}
void Encoder::u16(std::uint16_t v) {
    if (grow(2)) store_le(out_.data() + out_.size() - 2, v);
}
void Encoder::u32(std::uint32_t v) {
    if (grow(4)) store_le(out_.data() + out_.size() - 4, v);
}
void Encoder::u64(std::uint64_t v) {
    if (grow(8)) store_le(out_.data() + out_.size() - 8, v);
}
void Encoder::str(std::string_view s) {
    if (s.size() > std::numeric_limits<std::uint16_t>::max()) {
        ok_ = false;
        return;
    }
    u16(static_cast<std::uint16_t>(s.size()));
    bytes({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}
void Encoder::qid(const Qid& q) {
    u8(q.type);
    u32(q.version);
    u64(q.path);
}
void Encoder::bytes(std::span<const std::uint8_t> data) {
    if (data.empty()) return;
    if (grow(data.size())) std::memcpy(out_.data() + out_.size() - data.size(), data.data(), data.size());
}
std::uint8_t* Encoder::reserve(std::uint32_t length) {
    if (!grow(length)) return nullptr;
    return out_.data() + out_.size() - length;
}
void Encoder::patch_u32(std::size_t offset, std::uint32_t v) {
    if (ok_ && offset + 4 <= out_.size()) store_le(out_.data() + offset, v);
}
void Encoder::truncate(std::size_t size) {
    if (ok_ && size >= kHeaderSize && size <= out_.size()) out_.resize(size);
}
bool Encoder::finish() {
    if (!ok_) return false;
    store_le(out_.data(), static_cast<std::uint32_t>(out_.size()));
    return true;
}

std::vector<std::uint8_t> encode_error(std::uint16_t tag, std::uint32_t ecode) {
    std::vector<std::uint8_t> out;
    Encoder e(out, kHeaderSize + 4, Type::Rlerror, tag);
    e.u32(ecode);
    e.finish();
    return out;
}

}  // namespace devices::p9
