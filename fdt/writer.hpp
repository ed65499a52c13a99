// fdt::Writer: RAII over libfdt's sequential-write API. Nodes are scoped guards, so begin/end
// can never mismatch; properties are typed and big-endian-encoded here, nowhere else.
// Devicetree Specification v0.4 chapter 5 (flattened format), 2.3 (standard properties).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/address.hpp"

namespace fdt {

class Writer {
public:
    // A node opened with Writer::node(); closes it when destroyed. Properties of the node must be
    // written before its first child node (the format requires it; Writer checks).
    class [[nodiscard]] Node {
    public:
        Node(Node&& other) noexcept : writer_(other.writer_) { other.writer_ = nullptr; }
        Node(const Node&) = delete;
        Node& operator=(const Node&) = delete;
        Node& operator=(Node&&) = delete;
        ~Node();

    private:
        friend class Writer;
        explicit Node(Writer& writer) : writer_(&writer) {}
        Writer* writer_;
    };

    Writer();  // starts the tree and opens the root node
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Opens "name" (e.g. "memory@80000000") as a child of the innermost open node.
    Node node(std::string_view name);
    // "name@<hex address>", the usual way to name a node with a reg property.
    Node node(std::string_view name, std::uint64_t unit_address);

    void property_empty(std::string_view name);
    void property_u32(std::string_view name, std::uint32_t value);
    void property_u64(std::string_view name, std::uint64_t value);
    void property_u32s(std::string_view name, std::span<const std::uint32_t> cells);
    void property_u32s(std::string_view name, std::initializer_list<std::uint32_t> cells) {
        property_u32s(name, std::span<const std::uint32_t>(cells.begin(), cells.size()));
    }
    void property_string(std::string_view name, std::string_view value);
    void property_strings(std::string_view name, std::initializer_list<std::string_view> values);
    void property_bytes(std::string_view name, std::span<const std::uint8_t> bytes);
    // reg for #address-cells = <2>, #size-cells = <2> parents: <base-hi base-lo size-hi size-lo>...
    void property_reg(std::initializer_list<vmm::GuestRange> ranges);

    // Closes the root node and returns the finished, packed blob. All Node guards must be gone.
    std::vector<std::uint8_t> finish();

private:
    void begin_node(const std::string& name);
    void end_node();
    void property_raw(std::string_view name, const void* data, std::size_t size);
    template <class Op>
    void call(const char* what, Op op);

    std::vector<std::uint8_t> buffer_;
    std::vector<bool> has_child_;  // per open node: a child was opened (no more properties then)
    bool finished_ = false;
};

}  // namespace fdt
