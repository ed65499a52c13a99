// virtio-blk end to end through the fake driver against a temporary raw image (virtio 1.2 5.2).
#include "virtio/blk.hpp"

#include <doctest/doctest.h>

#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/aliased_chain.hpp"
#include "tests/support/fake_driver.hpp"
#include "virtio/features.hpp"
#include "vmm/base/error.hpp"

using support::ChainLayout;
using support::FakeDriver;
using support::Segment;
using virtio::feature_bit;

namespace {

constexpr std::size_t kImageSize = 64 * 1024;  // 128 sectors

// A temporary image file filled with a recognisable pattern: byte i = i * 7 + (i >> 9).
class TempImage {
public:
    TempImage() {
        char name[] = "/tmp/lkvm-blk-test-XXXXXX";
        const int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        path_ = name;
        std::vector<std::uint8_t> bytes(kImageSize);
        for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = pattern(i);
        REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
        ::close(fd);
    }
    ~TempImage() { ::unlink(path_.c_str()); }
    static std::uint8_t pattern(std::size_t i) { return static_cast<std::uint8_t>(i * 7 + (i >> 9)); }
    const std::string& path() const { return path_; }
    std::vector<std::uint8_t> read(std::size_t offset, std::size_t length) const {
        std::vector<std::uint8_t> bytes(length);
        FILE* f = std::fopen(path_.c_str(), "rb");
        std::fseek(f, static_cast<long>(offset), SEEK_SET);
        CHECK(std::fread(bytes.data(), 1, length, f) == length);
        std::fclose(f);
        return bytes;
    }

private:
    std::string path_;
};

struct Fixture {
    TempImage image;
    FakeDriver driver;
    explicit Fixture(virtio::BlkOptions options = {})
        : driver(std::make_unique<virtio::Blk>(virtio::FileBackend::open(image.path(), options.read_only), options)) {
        REQUIRE(driver.start());
    }

    std::uint64_t header(std::uint32_t type, std::uint64_t sector) {
        virtio_blk_outhdr h{};
        h.type = type;
        h.sector = sector;
        const std::uint64_t at = driver.ram().alloc(sizeof h);
        driver.ram().write_obj(at, h);
        return at;
    }
    struct Result {
        std::uint32_t used_len;
        std::uint8_t status;
    };
    // Submits the chain, kicks, and returns the used length and the status byte at `status_at`.
    Result submit(std::initializer_list<Segment> segments, std::uint64_t status_at,
                  ChainLayout layout = ChainLayout::Direct) {
        driver.ram().write_obj<std::uint8_t>(status_at, 0xee);
        const std::uint16_t head = driver.add_chain(0, segments, layout);
        driver.kick(0);
        auto used = driver.pop_used(0);
        REQUIRE(used);
        CHECK(used->id == head);
        return {used->len, driver.ram().read_obj<std::uint8_t>(status_at)};
    }
};

// A backend whose every operation fails, for host I/O errors.
struct FailingBackend final : virtio::BlockBackend {
    std::uint64_t size() const override { return kImageSize; }
    bool read_at(std::uint64_t, std::span<std::uint8_t>) override { return false; }
    bool write_at(std::uint64_t, std::span<const std::uint8_t>) override { return false; }
    bool flush() override { return false; }
};

// Identity translation split at every 4 KiB boundary, so DMA arrives in several host pieces.
struct PageSplittingTranslator final : vmm::Translator {
    mutable unsigned fragments = 0;
    bool translate(vmm::Iova iova, std::uint64_t length, vmm::Access, vmm::FragmentVisitor& v) const override {
        std::uint64_t at = iova.value;
        std::uint64_t left = length;
        while (left != 0) {
            const std::uint64_t piece = std::min(left, 0x1000 - (at & 0xfff));
            ++fragments;
            if (!v.visit(vmm::GuestPhysAddr{at}, piece)) return false;
            at += piece;
            left -= piece;
        }
        return true;
    }
};

}  // namespace

TEST_CASE("Blk reads and writes through a translating IOMMU view across page boundaries") {
    TempImage image;
    auto translator = std::make_shared<PageSplittingTranslator>();
    FakeDriver driver(
        std::make_unique<virtio::Blk>(virtio::FileBackend::open(image.path(), false), virtio::BlkOptions{}), nullptr,
        translator);
    REQUIRE(driver.start());
    REQUIRE(virtio::has_feature(driver.negotiated(), VIRTIO_F_ACCESS_PLATFORM));
    virtio_blk_outhdr h{};
    h.type = VIRTIO_BLK_T_IN;
    h.sector = 8;
    const std::uint64_t hdr = driver.ram().alloc(16);
    driver.ram().write_obj(hdr, h);
    const std::uint64_t page = driver.ram().alloc(0x3000, 0x1000);
    const std::uint64_t data = page + 0x1000 - 300;  // 2048 bytes straddling a page boundary
    const std::uint64_t status = driver.ram().alloc(1);
    translator->fragments = 0;
    driver.add_chain(0, {Segment{hdr, 16, false}, Segment{data, 2048, true}, Segment{status, 1, true}});
    driver.kick(0);
    auto used = driver.pop_used(0);
    REQUIRE(used);
    CHECK(used->len == 2049);
    CHECK(driver.ram().read_obj<std::uint8_t>(status) == VIRTIO_BLK_S_OK);
    CHECK(driver.ram().read_bytes(data, 2048) == image.read(8 * 512, 2048));
    CHECK(translator->fragments > 3);

    h.type = VIRTIO_BLK_T_OUT;
    h.sector = 20;
    driver.ram().write_obj(hdr, h);
    driver.ram().fill(data, 2048, 0x77);
    driver.add_chain(0, {Segment{hdr, 16, false}, Segment{data, 2048, false}, Segment{status, 1, true}});
    driver.kick(0);
    REQUIRE(driver.pop_used(0));
    CHECK(driver.ram().read_obj<std::uint8_t>(status) == VIRTIO_BLK_S_OK);
    CHECK(image.read(20 * 512, 2048) == std::vector<std::uint8_t>(2048, 0x77));
}

TEST_CASE("Blk offers its features and reports capacity, seg_max and blk_size in config space") {
    Fixture f;
    CHECK(f.driver.read_reg(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_BLOCK);
    const std::uint64_t features = f.driver.negotiated();
    CHECK(virtio::has_feature(features, VIRTIO_BLK_F_SEG_MAX));
    CHECK(virtio::has_feature(features, VIRTIO_BLK_F_BLK_SIZE));
    CHECK(virtio::has_feature(features, VIRTIO_BLK_F_FLUSH));
    CHECK(virtio::has_feature(features, VIRTIO_RING_F_INDIRECT_DESC));
    CHECK(virtio::has_feature(features, VIRTIO_RING_F_EVENT_IDX));
    CHECK_FALSE(virtio::has_feature(features, VIRTIO_BLK_F_RO));
    CHECK(f.driver.read_config(offsetof(virtio_blk_config, capacity), 4) == kImageSize / 512);
    CHECK(f.driver.read_config(offsetof(virtio_blk_config, capacity) + 4, 4) == 0);
    CHECK(f.driver.read_config(offsetof(virtio_blk_config, seg_max), 4) == 254);
    CHECK(f.driver.read_config(offsetof(virtio_blk_config, blk_size), 4) == 512);
}

TEST_CASE("Blk rounds a partial trailing sector out of the capacity") {
    TempImage image;
    REQUIRE(::truncate(image.path().c_str(), 1000) == 0);
    virtio::Blk blk(virtio::FileBackend::open(image.path(), true), {});
    CHECK(blk.capacity_sectors() == 1);
}

TEST_CASE("Blk FileBackend::open names the image when it cannot be opened") {
    CHECK_THROWS_AS(virtio::FileBackend::open("/nonexistent/lkvm.img", true), vmm::SetupError);
}

TEST_CASE("Blk IN reads sectors into buffers split across descriptors") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, 3);
    const std::uint64_t a = f.driver.ram().alloc(100);
    const std::uint64_t b = f.driver.ram().alloc(924);
    const std::uint64_t status = f.driver.ram().alloc(1);
    auto r = f.submit({{hdr, 16, false}, {a, 100, true}, {b, 924, true}, {status, 1, true}}, status);
    CHECK(r.status == VIRTIO_BLK_S_OK);
    CHECK(r.used_len == 1025);
    auto got = f.driver.ram().read_bytes(a, 100);
    auto rest = f.driver.ram().read_bytes(b, 924);
    got.insert(got.end(), rest.begin(), rest.end());
    CHECK(got == f.image.read(3 * 512, 1024));
    CHECK(f.driver.irq().count() >= 1);
}

TEST_CASE("Blk IN works through an indirect table with the status in the same buffer as data") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, 0);
    const std::uint64_t data = f.driver.ram().alloc(513);
    auto r = f.submit({{hdr, 16, false}, {data, 513, true}}, data + 512, ChainLayout::Indirect);
    CHECK(r.status == VIRTIO_BLK_S_OK);
    CHECK(r.used_len == 513);
    CHECK(f.driver.ram().read_bytes(data, 512) == f.image.read(0, 512));
}

TEST_CASE("Blk OUT writes sectors to the image and FLUSH succeeds") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_OUT, 10);
    const std::uint64_t data = f.driver.ram().alloc(1024);
    f.driver.ram().fill(data, 1024, 0x5a);
    const std::uint64_t status = f.driver.ram().alloc(1);
    auto r = f.submit({{hdr, 16, false}, {data, 1024, false}, {status, 1, true}}, status);
    CHECK(r.status == VIRTIO_BLK_S_OK);
    CHECK(r.used_len == 1);
    CHECK(f.image.read(10 * 512, 1024) == std::vector<std::uint8_t>(1024, 0x5a));
    CHECK(f.image.read(9 * 512, 1)[0] == TempImage::pattern(9 * 512));  // neighbours untouched

    const std::uint64_t flush = f.header(VIRTIO_BLK_T_FLUSH, 0);
    auto fr = f.submit({{flush, 16, false}, {status, 1, true}}, status);
    CHECK(fr.status == VIRTIO_BLK_S_OK);
    CHECK(fr.used_len == 1);
}

TEST_CASE("Blk GET_ID answers the serial padded with NULs to 20 bytes") {
    virtio::BlkOptions options;
    options.serial = "lkvm-disk-0";
    Fixture f(options);
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_GET_ID, 0);
    const std::uint64_t id = f.driver.ram().alloc(20);
    f.driver.ram().fill(id, 20, 0xff);
    const std::uint64_t status = f.driver.ram().alloc(1);
    auto r = f.submit({{hdr, 16, false}, {id, 20, true}, {status, 1, true}}, status);
    CHECK(r.status == VIRTIO_BLK_S_OK);
    CHECK(r.used_len == 21);
    std::vector<std::uint8_t> expected(20, 0);
    std::memcpy(expected.data(), "lkvm-disk-0", 11);
    CHECK(f.driver.ram().read_bytes(id, 20) == expected);
}

TEST_CASE("Blk GET_ID truncates a serial longer than 20 bytes without a terminator") {
    virtio::BlkOptions options;
    options.serial = "0123456789abcdefghijKLMN";
    Fixture f(options);
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_GET_ID, 0);
    const std::uint64_t id = f.driver.ram().alloc(21);
    auto r = f.submit({{hdr, 16, false}, {id, 21, true}}, id + 20);
    CHECK(r.status == VIRTIO_BLK_S_OK);
    const auto got = f.driver.ram().read_bytes(id, 20);
    CHECK(std::string(got.begin(), got.end()) == "0123456789abcdefghij");
}

TEST_CASE("Blk read-only offers RO and fails OUT and FLUSH without touching the image") {
    virtio::BlkOptions options;
    options.read_only = true;
    Fixture f(options);
    CHECK(virtio::has_feature(f.driver.negotiated(), VIRTIO_BLK_F_RO));
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_OUT, 0);
    const std::uint64_t data = f.driver.ram().alloc(512);
    f.driver.ram().fill(data, 512, 0x11);
    const std::uint64_t status = f.driver.ram().alloc(1);
    auto r = f.submit({{hdr, 16, false}, {data, 512, false}, {status, 1, true}}, status);
    CHECK(r.status == VIRTIO_BLK_S_IOERR);
    CHECK(f.image.read(0, 512)[5] == TempImage::pattern(5));
    const std::uint64_t flush = f.header(VIRTIO_BLK_T_FLUSH, 0);
    CHECK(f.submit({{flush, 16, false}, {status, 1, true}}, status).status == VIRTIO_BLK_S_IOERR);
    const std::uint64_t in = f.header(VIRTIO_BLK_T_IN, 0);
    CHECK(f.submit({{in, 16, false}, {data, 512, true}, {status, 1, true}}, status).status == VIRTIO_BLK_S_OK);
}

TEST_CASE("Blk answers IOERR for requests beyond the capacity or whose sector maths overflows") {
    Fixture f;
    const std::uint64_t data = f.driver.ram().alloc(512);
    const std::uint64_t status = f.driver.ram().alloc(1);
    const std::uint64_t capacity = std::uint64_t{kImageSize} / 512;
    const std::uint64_t all_ones = ~std::uint64_t{0};
    for (std::uint64_t sector :
         std::vector<std::uint64_t>{capacity, capacity + 1, all_ones, (all_ones >> 9) + 1, all_ones / 512}) {
        f.driver.ram().fill(data, 512, 0xaa);
        const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, sector);
        auto r = f.submit({{hdr, 16, false}, {data, 512, true}, {status, 1, true}}, status);
        CHECK(r.status == VIRTIO_BLK_S_IOERR);
        // The data area is zeroed rather than left stale, and counted in the used length.
        CHECK(f.driver.ram().read_bytes(data, 512) == std::vector<std::uint8_t>(512, 0));
        CHECK(r.used_len == 513);
    }
    // The last sector is fine; one sector more is not.
    const std::uint64_t last = f.header(VIRTIO_BLK_T_IN, capacity - 1);
    CHECK(f.submit({{last, 16, false}, {data, 512, true}, {status, 1, true}}, status).status == VIRTIO_BLK_S_OK);
    const std::uint64_t big = f.driver.ram().alloc(1024);
    const std::uint64_t straddle = f.header(VIRTIO_BLK_T_OUT, capacity - 1);
    CHECK(f.submit({{straddle, 16, false}, {big, 1024, false}, {status, 1, true}}, status).status ==
          VIRTIO_BLK_S_IOERR);
}

TEST_CASE("Blk answers IOERR for data that is not a whole number of sectors") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, 0);
    const std::uint64_t data = f.driver.ram().alloc(100);
    const std::uint64_t status = f.driver.ram().alloc(1);
    CHECK(f.submit({{hdr, 16, false}, {data, 100, true}, {status, 1, true}}, status).status == VIRTIO_BLK_S_IOERR);
}

TEST_CASE("Blk answers UNSUPP for request types it does not implement") {
    Fixture f;
    const std::uint64_t status = f.driver.ram().alloc(1);
    for (std::uint32_t type : {std::uint32_t{VIRTIO_BLK_T_DISCARD}, std::uint32_t{VIRTIO_BLK_T_WRITE_ZEROES},
                               std::uint32_t{VIRTIO_BLK_T_SCSI_CMD}, 0x7fffffffu}) {
        const std::uint64_t hdr = f.header(type, 0);
        auto r = f.submit({{hdr, 16, false}, {status, 1, true}}, status);
        CHECK(r.status == VIRTIO_BLK_S_UNSUPP);
        CHECK(r.used_len == 1);
    }
}

TEST_CASE("Blk answers IOERR for a short header and used length 0 with no status byte") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, 0);
    const std::uint64_t status = f.driver.ram().alloc(1);
    CHECK(f.submit({{hdr, 8, false}, {status, 1, true}}, status).status == VIRTIO_BLK_S_IOERR);
    auto r = f.submit({{hdr, 16, false}}, status);  // nothing writable
    CHECK(r.used_len == 0);
    CHECK(r.status == 0xee);  // untouched
}

TEST_CASE("Blk answers IOERR when a data buffer lies outside guest RAM") {
    Fixture f;
    const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, 0);
    const std::uint64_t status = f.driver.ram().alloc(1);
    auto r = f.submit({{hdr, 16, false}, {f.driver.ram().end(), 512, true}, {status, 1, true}}, status);
    CHECK(r.status == VIRTIO_BLK_S_IOERR);
    CHECK(r.used_len == 0);  // the data area could not be written: nothing is claimed
    const std::uint64_t out = f.header(VIRTIO_BLK_T_OUT, 0);
    CHECK(f.submit({{out, 16, false}, {0x1000, 512, false}, {status, 1, true}}, status).status == VIRTIO_BLK_S_IOERR);
}

TEST_CASE("Blk reports host I/O failures as IOERR and keeps serving") {
    FakeDriver driver(std::make_unique<virtio::Blk>(std::make_unique<FailingBackend>(), virtio::BlkOptions{}));
    REQUIRE(driver.start());
    for (std::uint32_t type :
         {std::uint32_t{VIRTIO_BLK_T_IN}, std::uint32_t{VIRTIO_BLK_T_OUT}, std::uint32_t{VIRTIO_BLK_T_FLUSH}}) {
        virtio_blk_outhdr h{};
        h.type = type;
        const std::uint64_t hdr = driver.ram().alloc(16);
        driver.ram().write_obj(hdr, h);
        const std::uint64_t data = driver.ram().alloc(512);
        const std::uint64_t status = driver.ram().alloc(1);
        if (type == VIRTIO_BLK_T_FLUSH) driver.add_chain(0, {Segment{hdr, 16, false}, Segment{status, 1, true}});
        else
            driver.add_chain(
                0, {Segment{hdr, 16, false}, Segment{data, 512, type == VIRTIO_BLK_T_IN}, Segment{status, 1, true}});
        driver.kick(0);
        REQUIRE(driver.pop_used(0));
        CHECK(driver.ram().read_obj<std::uint8_t>(status) == VIRTIO_BLK_S_IOERR);
    }
    CHECK((driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0);
}

TEST_CASE("Blk processes a batch of requests in one kick and interrupts once with EVENT_IDX") {
    Fixture f;
    REQUIRE(virtio::has_feature(f.driver.negotiated(), VIRTIO_RING_F_EVENT_IDX));
    f.driver.irq().take();
    std::vector<std::uint64_t> statuses;
    for (int i = 0; i < 5; ++i) {
        const std::uint64_t hdr = f.header(VIRTIO_BLK_T_IN, static_cast<std::uint64_t>(i));
        const std::uint64_t data = f.driver.ram().alloc(512);
        statuses.push_back(f.driver.ram().alloc(1));
        f.driver.add_chain(0, {Segment{hdr, 16, false}, Segment{data, 512, true}, Segment{statuses.back(), 1, true}});
    }
    f.driver.kick(0);
    CHECK(f.driver.used_idx(0) == 5);
    CHECK(f.driver.irq().take() == 1);
    for (auto s : statuses) CHECK(f.driver.ram().read_obj<std::uint8_t>(s) == VIRTIO_BLK_S_OK);
}

TEST_CASE("Blk: a request whose 512 KiB indirect table aliases one 128 KiB buffer moves a bounded number of bytes") {
    // 32766 data descriptors of 128 KiB each claim almost 4 GiB: before the bound, every such
    // request outside the disk zero-filled all of it, and a within-disk one read that much.
    TempImage image;
    auto counter = std::make_shared<support::CountingTranslator>();
    FakeDriver driver(
        std::make_unique<virtio::Blk>(virtio::FileBackend::open(image.path(), false), virtio::BlkOptions{}), nullptr,
        counter);
    REQUIRE(driver.start());
    const std::uint64_t buffer = driver.ram().alloc(support::kAliasedBuffer, 4096);
    const std::uint64_t status = driver.ram().alloc(1);
    for (const std::uint32_t type : {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_OUT}) {
        CAPTURE(type);
        virtio_blk_outhdr h{};
        h.type = type;
        h.sector = 0;
        const std::uint64_t hdr = driver.ram().alloc(sizeof h);
        driver.ram().write_obj(hdr, h);
        std::vector<Segment> chain{Segment{hdr, sizeof h, false}};
        const bool out = type == VIRTIO_BLK_T_OUT;
        for (const Segment& s : support::aliased(buffer, support::kIndirectEntries - 2, !out)) chain.push_back(s);
        chain.push_back(Segment{status, 1, true});
        driver.ram().write_obj<std::uint8_t>(status, 0xee);
        const std::uint64_t before = counter->moved();
        const std::uint16_t head = driver.add_chain(0, chain, ChainLayout::Indirect);
        driver.kick(0);
        auto used = driver.pop_used(0);
        REQUIRE(used);
        CHECK(used->id == head);
        CHECK(used->len == 0);  // the data area was left alone
        CHECK(driver.ram().read_obj<std::uint8_t>(status) == VIRTIO_BLK_S_IOERR);
        // The indirect table itself is read (512 KiB), the claimed data is not touched.
        CHECK(counter->moved() - before < 1024 * 1024);
    }
    CHECK(image.read(0, 512) == TempImage().read(0, 512));  // nothing written to the disk
    // The largest request a driver may send (size_max * seg_max) is still served.
    CHECK(driver.read_config(offsetof(virtio_blk_config, size_max), 4) *
              driver.read_config(offsetof(virtio_blk_config, seg_max), 4) <=
          virtio::Blk::kMaxRequestData);
}
