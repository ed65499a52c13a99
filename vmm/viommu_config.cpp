#include "vmm/viommu_config.hpp"

#include <bit>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <optional>

#include "vmm/base/log.hpp"

namespace vmm {
namespace {

// "123", "0x1f" (no sign, no spaces), whole string.
std::optional<std::uint64_t> parse_number(std::string_view text) {
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    if (text.empty()) return std::nullopt;
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// page_size value: SIZE with a K/M/G suffix (a power of two: that granule and every larger
// size), or a plain number taken as the mask itself.
std::optional<std::uint64_t> parse_page_size(std::string_view text) {
    if (text.empty()) return std::nullopt;
    unsigned shift = 0;
    switch (text.back()) {
        case 'K':
        case 'k': shift = 10; break;
        case 'M':
        case 'm': shift = 20; break;
        case 'G':
        case 'g': shift = 30; break;
        default: return parse_number(text);
    }
    auto size = parse_number(text.substr(0, text.size() - 1));
    if (!size || *size == 0 || !std::has_single_bit(*size) || *size > (std::uint64_t{1} << (63 - shift)))
        return std::nullopt;
    return ~((*size << shift) - 1);
}

// A power-of-two size for messages: "2 MiB", "64 KiB", "1 GiB".
std::string size_text(std::uint64_t size) {
    if (size >= (std::uint64_t{1} << 30) && size % (std::uint64_t{1} << 30) == 0)
        return std::to_string(size >> 30) + " GiB";
    if (size >= (std::uint64_t{1} << 20) && size % (std::uint64_t{1} << 20) == 0)
        return std::to_string(size >> 20) + " MiB";
    if (size >= 1024 && size % 1024 == 0) return std::to_string(size >> 10) + " KiB";
    return std::to_string(size) + " bytes";
}

}  // namespace

std::string parse_viommu(std::string_view spec, ViommuConfig& out) {
    const std::string where = "--viommu " + std::string(spec);
    bool devices_given = false;
    bool range_given = false;
    ViommuConfig c = out;
    c.virtio = c.vfio = false;
    while (!spec.empty()) {
        const std::size_t comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
        if (item.empty()) return where + ": empty item; separate options with single commas";
        const std::size_t eq = item.find('=');
        if (eq == std::string_view::npos) {
            if (item == "virtio") c.virtio = true;
            else if (item == "vfio") c.vfio = true;
            else if (item == "all") c.virtio = c.vfio = true;
            else
                return where + ": unknown device kind '" + std::string(item) +
                       "'; use virtio, vfio or all, then options such as page_size=4K,bypass=1";
            devices_given = true;
            continue;
        }
        const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
        const std::string bad = where + ": bad value '" + std::string(value) + "' for " + std::string(key);
        if (key == "page_size") {
            auto mask = parse_page_size(value);
            if (!mask) return bad + "; use 4K, 64K or a mask such as 0x40201000";
            c.window.page_size_mask = *mask;
        } else if (key == "bypass") {
            if (value == "0") c.boot_bypass = false;
            else if (value == "1") c.boot_bypass = true;
            else return bad + "; use bypass=0 or bypass=1";
        } else if (key == "input_bits") {
            auto bits = parse_number(value);
            if (!bits || *bits < 12 || *bits > 64) return bad + "; use a number of address bits from 12 to 64";
            if (range_given) return where + ": give input_bits or input_range, not both";
            c.window.input_first = 0;
            c.window.input_last = *bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << *bits) - 1;
            range_given = true;
        } else if (key == "input_range") {
            const std::size_t dash = value.find('-');
            auto first = parse_number(value.substr(0, dash));
            auto last = dash == std::string_view::npos ? std::nullopt : parse_number(value.substr(dash + 1));
            if (!first || !last) return bad + "; use input_range=START-END (inclusive), e.g. 0x0-0xffffffffffff";
            if (range_given) return where + ": give input_bits or input_range, not both";
            c.window.input_first = *first;
            c.window.input_last = *last;
            range_given = true;
        } else if (key == "poll") {
            auto us = parse_number(value);
            if (!us || *us > kMaxViommuPollUs)
                return bad + "; use poll=US, microseconds from 0 (off) to " + std::to_string(kMaxViommuPollUs);
            c.poll_us = static_cast<std::uint32_t>(*us);
        } else if (key == "tables") {
            if (value == "on") c.tables = true;
            else if (value == "off") c.tables = false;
            else return bad + "; use tables=on or tables=off";
        } else {
            return where + ": unknown option '" + std::string(key) +
                   "'; the options are page_size=, bypass=, input_range=, input_bits=, poll= and tables=";
        }
    }
    if (!devices_given) c.virtio = c.vfio = true;  // the bare flag (or options only): everything
    out = c;
    return {};
}

std::vector<std::string> check_viommu(const ViommuConfig& c) {
    std::vector<std::string> errors;
    const iommu::IovaWindow& w = c.window;
    if (w.page_size_mask == 0) {
        errors.push_back("--viommu page_size=0: the page size mask needs at least one bit (virtio 1.2 5.13.4)");
        return errors;
    }
    const std::uint64_t granule = w.granule();
    // Linux's virtio-iommu driver gives endpoints no domain when the granule exceeds its
    // PAGE_SIZE (drivers/iommu/virtio-iommu.c), so a 2 MiB granule would take their DMA away.
    if (granule > kViommuMaxGranule)
        errors.push_back(
            "--viommu page_size=" + hex(w.page_size_mask) + ": granule " + size_text(granule) +
            " is larger than any arm64 page, and Linux refuses a granule above its page size; use "
            "page_size=4K (the default: the guest still maps a large contiguous buffer in one MAP) or 64K");
    if (w.input_first > w.input_last)
        errors.push_back("--viommu input_range=" + hex(w.input_first) + "-" + hex(w.input_last) +
                         ": START is above END");
    else if (w.input_first % granule != 0 || (w.input_last != ~std::uint64_t{0} && (w.input_last + 1) % granule != 0) ||
             w.input_last - w.input_first < granule - 1)
        errors.push_back("--viommu input_range=" + hex(w.input_first) + "-" + hex(w.input_last) +
                         ": must hold whole pages of the granule " + hex(granule) + " (START aligned, END+1 aligned)");
    if (!c.virtio && !c.vfio) errors.push_back("--viommu: no device kind selected; use virtio, vfio or all");
    return errors;
}

std::string describe(const ViommuConfig& c) {
    std::string kinds = c.virtio && c.vfio ? "virtio+vfio" : c.virtio ? "virtio" : c.vfio ? "vfio" : "none";
    const iommu::IovaWindow& w = c.window;
    return kinds + ", page_size_mask=" + hex(w.page_size_mask) + ", bypass=" + (c.boot_bypass ? "1" : "0") +
           ", input=" + hex(w.input_first) + "-" + hex(w.input_last) + ", poll=" + std::to_string(c.poll_us) + "us" +
           ", tables=" + (c.tables ? "on" : "off");
}

}  // namespace vmm
