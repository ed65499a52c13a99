#include "fdt/writer.hpp"

#include <libfdt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace fdt {
namespace {

constexpr std::size_t kInitialSize = 16 * 1024;
constexpr std::size_t kMaxSize = 2 * 1024 * 1024;  // booting.rst: the DTB must not exceed 2 MiB

std::string error_text(const char* what, int err) {
    return std::string("device tree: ") + what + ": " + fdt_strerror(err);
}

}  // namespace

Writer::Writer() : buffer_(kInitialSize) {
    call("create", [this] { return fdt_create(buffer_.data(), static_cast<int>(buffer_.size())); });
    call("reserve map", [this] { return fdt_finish_reservemap(buffer_.data()); });
    begin_node("");
}

Writer::Node::~Node() {
    if (writer_) writer_->end_node();
}

// Runs a libfdt sequential-write call, growing the buffer and retrying when it is full.
template <class Op>
void Writer::call(const char* what, Op op) {
    for (;;) {
        int err = op();
        if (err >= 0) return;
        if (err != -FDT_ERR_NOSPACE || buffer_.size() >= kMaxSize) throw std::runtime_error(error_text(what, err));
        std::vector<std::uint8_t> bigger(buffer_.size() * 2);
        int resized = fdt_resize(buffer_.data(), bigger.data(), static_cast<int>(bigger.size()));
        if (resized < 0) throw std::runtime_error(error_text("resize", resized));
        buffer_.swap(bigger);
    }
}

void Writer::begin_node(const std::string& name) {
    if (finished_) throw std::logic_error("device tree: node opened after finish()");
    if (!has_child_.empty()) has_child_.back() = true;
    call("begin node", [&] { return fdt_begin_node(buffer_.data(), name.c_str()); });
    has_child_.push_back(false);
}

void Writer::end_node() {
    // Runs in Node's destructor: a failure here (out of memory while growing) cannot be reported
    // as an exception, and a half-closed tree is useless, so it ends the process.
    try {
        call("end node", [&] { return fdt_end_node(buffer_.data()); });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lkvm: %s\n", e.what());
        std::abort();
    }
    has_child_.pop_back();
}

Writer::Node Writer::node(std::string_view name) {
    begin_node(std::string(name));
    return Node(*this);
}

Writer::Node Writer::node(std::string_view name, std::uint64_t unit_address) {
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, "@%llx", static_cast<unsigned long long>(unit_address));
    begin_node(std::string(name) + suffix);
    return Node(*this);
}

void Writer::property_raw(std::string_view name, const void* data, std::size_t size) {
    if (finished_ || has_child_.empty()) throw std::logic_error("device tree: property outside a node");
    if (has_child_.back())
        throw std::logic_error("device tree: property '" + std::string(name) + "' after a child node");
    std::string key(name);
    call("property", [&] { return fdt_property(buffer_.data(), key.c_str(), data, static_cast<int>(size)); });
}

void Writer::property_empty(std::string_view name) { property_raw(name, nullptr, 0); }

void Writer::property_u32(std::string_view name, std::uint32_t value) {
    fdt32_t cell = cpu_to_fdt32(value);
    property_raw(name, &cell, sizeof cell);
}

void Writer::property_u64(std::string_view name, std::uint64_t value) {
    fdt64_t cell = cpu_to_fdt64(value);
    property_raw(name, &cell, sizeof cell);
}

void Writer::property_u32s(std::string_view name, std::span<const std::uint32_t> cells) {
    std::vector<fdt32_t> encoded;
    encoded.reserve(cells.size());
    for (std::uint32_t c : cells) encoded.push_back(cpu_to_fdt32(c));
    property_raw(name, encoded.data(), encoded.size() * sizeof(fdt32_t));
}

void Writer::property_string(std::string_view name, std::string_view value) {
    std::string text(value);
    property_raw(name, text.c_str(), text.size() + 1);
}

void Writer::property_strings(std::string_view name, std::initializer_list<std::string_view> values) {
    std::string list;
    for (std::string_view v : values) {
        list.append(v);
        list.push_back('\0');
    }
    property_raw(name, list.data(), list.size());
}

void Writer::property_bytes(std::string_view name, std::span<const std::uint8_t> bytes) {
    property_raw(name, bytes.data(), bytes.size());
}

void Writer::property_reg(std::initializer_list<vmm::GuestRange> ranges) {
    std::vector<std::uint32_t> cells;
    for (const vmm::GuestRange& r : ranges) {
        std::uint64_t base = r.base().value;
        cells.insert(cells.end(), {static_cast<std::uint32_t>(base >> 32), static_cast<std::uint32_t>(base),
                                   static_cast<std::uint32_t>(r.size() >> 32), static_cast<std::uint32_t>(r.size())});
    }
    property_u32s("reg", cells);
}

std::vector<std::uint8_t> Writer::finish() {
    if (finished_) throw std::logic_error("device tree: finish() called twice");
    if (has_child_.size() != 1) throw std::logic_error("device tree: finish() with nodes still open");
    end_node();
    call("finish", [&] { return fdt_finish(buffer_.data()); });
    finished_ = true;
    buffer_.resize(fdt_totalsize(buffer_.data()));
    return std::move(buffer_);
}

}  // namespace fdt
