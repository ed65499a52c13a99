// 9P2000.L wire format: the one validated decoder and the bounded encoder every 9P message goes
// through. A message is size[4] type[1] tag[2] body, little-endian; strings are len[2] bytes.
// Message numbers and layouts follow Linux's client (include/net/9p/9p.h, net/9p/client.c);
// that header is not uapi, so the numbers are spelled here once.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace devices::p9 {

enum class Type : std::uint8_t {
    Tlerror = 6,
    Rlerror = 7,
    Tstatfs = 8,
    Rstatfs = 9,
    Tlopen = 12,
    Rlopen = 13,
    Tlcreate = 14,
    Rlcreate = 15,
    Tsymlink = 16,
    Rsymlink = 17,
    Tmknod = 18,
    Rmknod = 19,
    Trename = 20,
    Rrename = 21,
    Treadlink = 22,
    Rreadlink = 23,
    Tgetattr = 24,
    Rgetattr = 25,
    Tsetattr = 26,
    Rsetattr = 27,
    Txattrwalk = 30,
    Rxattrwalk = 31,
    Txattrcreate = 32,
    Rxattrcreate = 33,
    Treaddir = 40,
    Rreaddir = 41,
    Tfsync = 50,
    Rfsync = 51,
    Tlock = 52,
    Rlock = 53,
    Tgetlock = 54,
    Rgetlock = 55,
    Tlink = 70,
    Rlink = 71,
    Tmkdir = 72,
    Rmkdir = 73,
    Trenameat = 74,
    Rrenameat = 75,
    Tunlinkat = 76,
    Runlinkat = 77,
    Tversion = 100,
    Rversion = 101,
    Tauth = 102,
    Rauth = 103,
    Tattach = 104,
    Rattach = 105,
    Tflush = 108,
    Rflush = 109,
    Twalk = 110,
    Rwalk = 111,
    Tread = 116,
    Rread = 117,
    Twrite = 118,
    Rwrite = 119,
    Tclunk = 120,
    Rclunk = 121,
    Tremove = 122,
    Rremove = 123,
};

inline constexpr std::uint32_t kHeaderSize = 7;  // size[4] type[1] tag[2]
inline constexpr std::uint16_t kNoTag = 0xffff;
inline constexpr std::uint32_t kNoFid = 0xffffffff;
inline constexpr std::uint16_t kMaxWalkNames = 16;  // P9_MAXWELEM

// qid.type bits (include/net/9p/9p.h P9_QT*).
inline constexpr std::uint8_t kQidDir = 0x80;
inline constexpr std::uint8_t kQidSymlink = 0x02;
inline constexpr std::uint8_t kQidFile = 0x00;

struct Qid {
    std::uint8_t type = 0;
    std::uint32_t version = 0;
    std::uint64_t path = 0;
};
inline constexpr std::uint32_t kQidSize = 13;

struct Header {
    std::uint32_t size = 0;
    std::uint8_t type = 0;
    std::uint16_t tag = 0;
};

// Reads a message body. Every read is bounds-checked against the message; failure is sticky
// and reads after it return zeros, so a handler decodes all fields and checks ok() once.
class Decoder {
public:
    explicit Decoder(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

    std::uint8_t u8();
    std::uint16_t u16();
    std::uint32_t u32();
    std::uint64_t u64();
    // len[2] bytes; the view points into the message (valid while the message is).
    std::string_view str();
    // The next `length` bytes (Twrite data).
    std::span<const std::uint8_t> bytes(std::uint64_t length);

    bool ok() const { return ok_; }
    std::size_t remaining() const { return ok_ ? bytes_.size() - pos_ : 0; }

private:
    bool take(std::uint64_t length, const std::uint8_t** out);
    std::span<const std::uint8_t> bytes_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

// Parses the header of a complete message: its size field must equal `message.size()` and be at
// least the header. nullopt otherwise (the message cannot be answered reliably except by tag).
std::optional<Header> parse_header(std::span<const std::uint8_t> message);

// Builds one reply into a buffer bounded by `limit` (the negotiated msize and the room the guest
// gave). Overflow is sticky (ok() false); finish() patches size[4].
class Encoder {
public:
    Encoder(std::vector<std::uint8_t>& out, std::uint32_t limit, Type type, std::uint16_t tag);

    void u8(std::uint8_t v);
    void u16(std::uint16_t v);
    void u32(std::uint32_t v);
    void u64(std::uint64_t v);
    void str(std::string_view s);  // fails for strings longer than 65535 bytes
    void qid(const Qid& q);
    void bytes(std::span<const std::uint8_t> data);
    // Reserves `length` bytes in place (e.g. for pread straight into the reply); nullptr if they
    // do not fit.
    std::uint8_t* reserve(std::uint32_t length);
    // Writes a u32 at byte `offset` (already written), for counts known only afterwards.
    void patch_u32(std::size_t offset, std::uint32_t v);
    void truncate(std::size_t size);  // drops what was written past `size` (>= header)

    std::size_t size() const { return out_.size(); }
    std::uint32_t room() const { return ok_ ? limit_ - static_cast<std::uint32_t>(out_.size()) : 0; }
    bool ok() const { return ok_; }
    // Patches size[4]; false if anything overflowed.
    bool finish();

private:
    bool grow(std::uint64_t length);
    std::vector<std::uint8_t>& out_;
    std::uint32_t limit_;
    bool ok_ = true;
};

// Rlerror(ecode) for `tag`: 11 bytes.
std::vector<std::uint8_t> encode_error(std::uint16_t tag, std::uint32_t ecode);

}  // namespace devices::p9
