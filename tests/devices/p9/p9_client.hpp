// Test-only 9P2000.L client: builds T-messages with the server's own Encoder, hands them to a
// devices::p9::Server and decodes the replies; plus a scratch directory tree for the tests.
#pragma once

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "devices/p9/file_server.hpp"
#include "devices/p9/wire.hpp"

namespace p9test {

using devices::p9::Decoder;
using devices::p9::Encoder;
using devices::p9::Qid;
using devices::p9::Type;

// A fresh temporary directory holding `export/` (the share) and `outside/secret` (what no guest
// may reach); removed on destruction.
struct Scratch {
    std::filesystem::path base;
    std::filesystem::path exported;
    std::filesystem::path outside;
    Scratch() {
        char tmpl[] = "/tmp/lkvm-p9-test-XXXXXX";
        base = ::mkdtemp(tmpl);
        exported = base / "export";
        outside = base / "outside";
        std::filesystem::create_directory(exported);
        std::filesystem::create_directory(outside);
        std::ofstream(outside / "secret") << "secret";
    }
    ~Scratch() {
        std::error_code ignored;
        std::filesystem::remove_all(base, ignored);
    }
    std::string read_secret() const {
        std::ifstream in(outside / "secret");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
};

// P9_DOTL_* open flags (Linux's generic O_* values).
inline constexpr std::uint32_t kRdonly = 0, kWronly = 1, kRdwr = 2, kCreate = 0100, kTrunc = 01000;

class Client {
public:
    explicit Client(devices::p9::Server& server) : server_(server) {}

    // Sends one message (built by `body`), returns 0 on success or the Rlerror code.
    template <class Body>
    std::uint32_t call(Type type, Body&& body, std::uint32_t reply_limit = 1 << 20) {
        std::vector<std::uint8_t> message;
        Encoder e(message, 1 << 20, type, 7);
        body(e);
        REQUIRE(e.finish());
        return send(message, reply_limit);
    }
    std::uint32_t send(std::span<const std::uint8_t> message, std::uint32_t reply_limit = 1 << 20) {
        server_.handle(message, reply_, reply_limit);
        REQUIRE(reply_.size() >= devices::p9::kHeaderSize);
        auto header = devices::p9::parse_header(reply_);
        REQUIRE(header);
        if (header->type == static_cast<std::uint8_t>(Type::Rlerror)) return body().u32();
        return 0;
    }
    Decoder body() const { return Decoder(std::span<const std::uint8_t>(reply_).subspan(devices::p9::kHeaderSize)); }
    std::uint8_t reply_type() const { return reply_.at(4); }
    const std::vector<std::uint8_t>& reply() const { return reply_; }

    std::uint32_t version(std::uint32_t msize = 512 * 1024) {
        return call(Type::Tversion, [&](Encoder& e) { e.u32(msize), e.str("9P2000.L"); });
    }
    std::uint32_t attach(std::uint32_t fid) {
        return call(Type::Tattach,
                    [&](Encoder& e) { e.u32(fid), e.u32(devices::p9::kNoFid), e.str("root"), e.str(""), e.u32(0); });
    }
    // Returns 0 when every name was walked; the Rlerror code when the first failed; -1 (as u32)
    // for a short walk (walked() names succeeded).
    std::uint32_t walk(std::uint32_t fid, std::uint32_t newfid, std::initializer_list<std::string> names) {
        const std::uint32_t err = call(Type::Twalk, [&](Encoder& e) {
            e.u32(fid), e.u32(newfid), e.u16(static_cast<std::uint16_t>(names.size()));
            for (const std::string& n : names) e.str(n);
        });
        if (err) return err;
        Decoder d = body();
        walked_ = d.u16();
        last_qid_ = {};
        for (std::uint16_t i = 0; i < walked_; ++i) last_qid_ = {d.u8(), d.u32(), d.u64()};
        return walked_ == names.size() ? 0 : 0xffffffff;
    }
    std::uint16_t walked() const { return walked_; }
    Qid last_qid() const { return last_qid_; }
    std::uint32_t lopen(std::uint32_t fid, std::uint32_t flags) {
        return call(Type::Tlopen, [&](Encoder& e) { e.u32(fid), e.u32(flags); });
    }
    std::uint32_t lcreate(std::uint32_t fid, const std::string& name, std::uint32_t flags = kRdwr,
                          std::uint32_t mode = 0644) {
        return call(Type::Tlcreate, [&](Encoder& e) { e.u32(fid), e.str(name), e.u32(flags), e.u32(mode), e.u32(0); });
    }
    std::uint32_t write(std::uint32_t fid, std::uint64_t offset, const std::string& data) {
        return call(Type::Twrite, [&](Encoder& e) {
            e.u32(fid), e.u64(offset), e.u32(static_cast<std::uint32_t>(data.size()));
            e.bytes({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()});
        });
    }
    // The data of an Rread, or the error code in *err.
    std::string read(std::uint32_t fid, std::uint64_t offset, std::uint32_t count, std::uint32_t* err = nullptr) {
        const std::uint32_t e = call(Type::Tread, [&](Encoder& m) { m.u32(fid), m.u64(offset), m.u32(count); });
        if (err) *err = e;
        if (e) return {};
        Decoder d = body();
        const std::uint32_t n = d.u32();
        auto data = d.bytes(n);
        return {reinterpret_cast<const char*>(data.data()), data.size()};
    }
    std::uint32_t clunk(std::uint32_t fid) {
        return call(Type::Tclunk, [&](Encoder& e) { e.u32(fid); });
    }
    std::uint32_t mkdir(std::uint32_t dfid, const std::string& name) {
        return call(Type::Tmkdir, [&](Encoder& e) { e.u32(dfid), e.str(name), e.u32(0755), e.u32(0); });
    }
    std::uint32_t symlink(std::uint32_t dfid, const std::string& name, const std::string& target) {
        return call(Type::Tsymlink, [&](Encoder& e) { e.u32(dfid), e.str(name), e.str(target), e.u32(0); });
    }
    std::uint32_t unlinkat(std::uint32_t dfid, const std::string& name, std::uint32_t flags = 0) {
        return call(Type::Tunlinkat, [&](Encoder& e) { e.u32(dfid), e.str(name), e.u32(flags); });
    }
    std::uint32_t renameat(std::uint32_t odfid, const std::string& oname, std::uint32_t ndfid,
                           const std::string& nname) {
        return call(Type::Trenameat, [&](Encoder& e) { e.u32(odfid), e.str(oname), e.u32(ndfid), e.str(nname); });
    }
    // Tsetattr with only the size bit (P9_ATTR_SIZE).
    std::uint32_t truncate(std::uint32_t fid, std::uint64_t size) {
        return call(Type::Tsetattr, [&](Encoder& e) {
            e.u32(fid), e.u32(8), e.u32(0), e.u32(0), e.u32(0), e.u64(size);
            for (int i = 0; i < 4; ++i) e.u64(0);
        });
    }
    // st_size from Rgetattr.
    std::uint64_t size_of(std::uint32_t fid) {
        REQUIRE(call(Type::Tgetattr, [&](Encoder& e) { e.u32(fid), e.u64(0x7ff); }) == 0);
        Decoder d = body();
        d.u64(), d.u8(), d.u32(), d.u64();            // valid, qid
        d.u32(), d.u32(), d.u32(), d.u64(), d.u64();  // mode uid gid nlink rdev
        return d.u64();
    }
    // Names of one Treaddir from offset 0.
    std::vector<std::string> readdir(std::uint32_t fid, std::uint32_t count = 8192) {
        std::vector<std::string> names;
        REQUIRE(call(Type::Treaddir, [&](Encoder& e) { e.u32(fid), e.u64(0), e.u32(count); }) == 0);
        Decoder d = body();
        const std::uint32_t n = d.u32();
        Decoder entries(d.bytes(n));
        while (entries.ok() && entries.remaining() > 0) {
            entries.u8(), entries.u32(), entries.u64(), entries.u64(), entries.u8();
            names.emplace_back(entries.str());
        }
        CHECK(entries.ok());
        return names;
    }

private:
    devices::p9::Server& server_;
    std::vector<std::uint8_t> reply_;
    std::uint16_t walked_ = 0;
    Qid last_qid_;
};

}  // namespace p9test
