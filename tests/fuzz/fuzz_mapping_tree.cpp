// libFuzzer target: iommu::MappingTree against std::map (tests/support/mapping_tree_model.hpp),
// for long differential runs (`make fuzz`, or -runs=N; tests/iommu/mapping_tree_test.cpp runs the
// same harness briefly). Each 5-byte record is one
// operation (kind, first page, length); a disagreement aborts with what differed.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/fuzz/fuzz_input.hpp"
#include "tests/support/mapping_tree_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using Op = support::MappingTreeModel::Op;
    fuzz::Input in{data, size};
    support::MappingTreeModel model;
    // Bounded by the input: one operation per record.
    while (!in.empty()) {
        const auto op = static_cast<Op>(in.take<std::uint8_t>() % static_cast<std::uint8_t>(Op::Count));
        const std::uint64_t a = in.take<std::uint16_t>();
        const std::uint64_t b = in.take<std::uint16_t>();
        std::string error = model.step(op, a, b);
        if (error.empty() && in.empty()) error = model.check_all();
        if (!error.empty()) {
            std::fprintf(stderr, "MappingTree disagrees with std::map: %s\n", error.c_str());
            std::abort();
        }
    }
    return 0;
}
