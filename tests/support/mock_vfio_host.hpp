// A fake host for devices::vfio: the legacy VFIO container/group/device ioctls with type-1 v2
// semantics (MAP/UNMAP alignment, overlap, no bisecting unmaps, IOVA ranges, dma_entry_limit),
// vfio-pci regions backed by memfds (so pread/pwrite and mmap see the same bytes), the sysfs
// facts around them, and failure injection. Descriptors it hands out are real (/dev/null), so
// nothing can close a descriptor it does not own.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "devices/vfio/container.hpp"
#include "devices/vfio/host.hpp"
#include "devices/vfio/vfio_device.hpp"

namespace devices::vfio::testing {

struct MockDma {
    std::uint64_t iova = 0;
    std::uint64_t size = 0;
    const void* host = nullptr;
    std::uint32_t flags = 0;  // VFIO_DMA_MAP_FLAG_READ / _WRITE
};

struct MockBar {
    std::uint64_t size = 0;  // 0: not implemented
    bool mmap = true;
    bool has_sparse = false;
    std::vector<SparseArea> sparse;
    bool msix_mappable = false;
};

struct MockDevice {
    std::string bdf;
    unsigned group = 0;
    std::string driver = "vfio-pci";
    std::array<std::uint8_t, 4096> config{};  // what the device's config region reads
    std::array<MockBar, 6> bars;
    std::uint32_t msix_vectors = 0;
    bool can_reset = true;
    // ---- observed
    unsigned resets = 0;
    bool msix_enabled = false;
    std::vector<std::int32_t> msix_eventfds;
    unsigned set_irqs_calls = 0;
    std::vector<std::pair<std::uint64_t, std::size_t>> config_writes;  // offset, size
};

class MockVfioHost final : public Host {
public:
    MockVfioHost();
    ~MockVfioHost() override;
    MockVfioHost(const MockVfioHost&) = delete;
    MockVfioHost& operator=(const MockVfioHost&) = delete;

    // ---- the host's set-up
    // A device bound to vfio-pci in `group` (the group becomes viable unless set otherwise).
    MockDevice& add_device(const std::string& bdf, unsigned group);
    // Writes a minimal endpoint config space: IDs, class, 64-bit BAR0 of `bar0_size` (registers),
    // and an MSI-X capability at 0x40 with `vectors` whose table and PBA sit in BAR `msix_bar` at
    // the given offsets; plus a PCIe capability at 0x60 and an MSI capability at 0x50 (dropped by
    // lkvm). `msix_bar` 0 shares BAR0 (QEMU's default NVMe layout).
    static void make_nvme_like(MockDevice& device, std::uint64_t bar0_size, unsigned vectors, unsigned msix_bar,
                               std::uint64_t table_offset, std::uint64_t pba_offset);
    void add_group_member(unsigned group, const std::string& bdf, const std::string& driver);
    void set_group_viable(unsigned group, bool viable) { viable_[group] = viable; }
    void set_container_missing(bool missing) { container_missing_ = missing; }
    void set_iova_ranges(std::vector<IovaRange> ranges) { iova_ranges_ = std::move(ranges); }
    void set_page_sizes(std::uint64_t sizes) { page_sizes_ = sizes; }
    void set_dma_limit(std::uint32_t entries) { dma_limit_ = entries; }
    void set_report_dma_avail(bool report) { report_dma_avail_ = report; }
    void set_memlock_budget(std::optional<std::uint64_t> bytes) { memlock_budget_ = bytes; }
    void set_reserved_regions(unsigned group, std::string text) { reserved_text_[group] = std::move(text); }
    void set_page_size(std::uint64_t bytes) { page_size_ = bytes; }

    // ---- failure injection: after `successes` more successful calls the next fails with -err
    void fail_map_after(std::size_t successes, int err) { map_failure_ = {successes, err}; }
    void fail_unmap_after(std::size_t successes, int err) { unmap_failure_ = {successes, err}; }
    void clear_failures() {
        map_failure_.reset();
        unmap_failure_.reset();
    }

    // ---- inspection
    MockDevice& device(const std::string& bdf) { return devices_.at(bdf); }
    // Live DMA entries of every open container, by container fd.
    std::map<int, std::vector<MockDma>> dma() const;
    std::size_t dma_entries() const;
    std::uint64_t dma_bytes() const;
    std::size_t containers_open() const;
    std::size_t open_fds() const { return fds_.size(); }
    unsigned map_calls() const { return map_calls_; }
    unsigned unmap_calls() const { return unmap_calls_; }
    // What each close() closed, in order: "container", "group 1", "device 0000:00:01.0".
    const std::vector<std::string>& close_log() const { return close_log_; }
    // The BAR's backing bytes (what mmap and pread/pwrite see).
    std::vector<std::uint8_t> bar_bytes(const std::string& bdf, unsigned bar, std::uint64_t offset, std::size_t size);
    void set_bar_bytes(const std::string& bdf, unsigned bar, std::uint64_t offset,
                       const std::vector<std::uint8_t>& bytes);

    // ---- Host
    int open(const std::string& path, int flags) override;
    void close(int fd) override;
    int ioctl(int fd, unsigned long request, void* arg) override;
    int ioctl_value(int fd, unsigned long request, unsigned long arg) override;
    ssize_t pread(int fd, void* buffer, std::size_t size, off_t offset) override;
    ssize_t pwrite(int fd, const void* buffer, std::size_t size, off_t offset) override;
    void* mmap(std::size_t size, int prot, int fd, off_t offset) override;
    void munmap(void* address, std::size_t size) override;
    std::optional<std::string> read_text(const std::string& path) override;
    std::optional<std::string> read_link(const std::string& path) override;
    std::vector<std::string> list_dir(const std::string& path) override;
    std::optional<std::uint64_t> memlock_budget() override { return memlock_budget_; }
    std::uint64_t page_size() override { return page_size_; }

private:
    enum class Kind { Container, Group, Device };
    struct Fd {
        Kind kind = Kind::Container;
        unsigned group = 0;        // Group
        std::string bdf;           // Device
        int container = -1;        // Group: the container it joined
        bool iommu_set = false;    // Container
        std::vector<MockDma> dma;  // Container
    };
    struct Failure {
        std::size_t successes;
        int err;
    };
    int new_fd(Fd fd);
    bool consume(std::optional<Failure>& failure, int& err);
    int container_ioctl(Fd& c, unsigned long request, void* arg);
    int group_ioctl(int fd, Fd& g, unsigned long request, void* arg);
    int device_ioctl(Fd& d, unsigned long request, void* arg);
    int region_info(MockDevice& device, void* arg);
    int region_fd(const std::string& bdf, unsigned bar);

    std::map<int, Fd> fds_;
    std::map<std::string, MockDevice> devices_;
    std::map<std::string, std::array<int, 6>> bar_memfds_;
    std::map<unsigned, std::vector<std::pair<std::string, std::string>>> members_;  // group -> (bdf, driver)
    std::map<unsigned, bool> viable_;
    std::map<unsigned, std::string> reserved_text_;
    bool container_missing_ = false;
    std::vector<IovaRange> iova_ranges_{{0, 0x7ffffff}, {0x8100000, 0xffffffffffffull}};
    std::uint64_t page_sizes_ = 0x40201000;  // 4 KiB | 2 MiB | 1 GiB, as the rig's SMMUv3
    std::uint32_t dma_limit_ = 65535;
    bool report_dma_avail_ = true;
    std::optional<std::uint64_t> memlock_budget_;
    std::uint64_t page_size_ = 4096;
    std::optional<Failure> map_failure_, unmap_failure_;
    unsigned map_calls_ = 0, unmap_calls_ = 0;
    std::vector<std::string> close_log_;
    std::map<void*, std::size_t> mappings_;
};

}  // namespace devices::vfio::testing
