#include "fdt/writer.hpp"

#include <doctest/doctest.h>
#include <libfdt.h>

#include <cstring>
#include <stdexcept>
#include <string>

TEST_CASE("fdt::Writer writes nested nodes and typed properties that libfdt reads back") {
    fdt::Writer w;
    w.property_u32("#address-cells", 2);
    {
        auto child = w.node("child", 0x1000);
        w.property_string("compatible", "test,child");
        w.property_strings("list", {"a", "bc"});
        w.property_u64("big", 0x1122334455667788ull);
        w.property_u32s("cells", {1, 2, 3});
        w.property_reg({*vmm::GuestRange::make(vmm::GuestPhysAddr{0x1'0000'1000}, 0x200)});
        w.property_empty("flag");
        auto grandchild = w.node("inner");
    }
    auto blob = w.finish();
    const void* fdt = blob.data();
    REQUIRE(fdt_check_header(fdt) == 0);
    CHECK(fdt_totalsize(fdt) == blob.size());

    int child = fdt_path_offset(fdt, "/child@1000");
    REQUIRE(child >= 0);
    CHECK(fdt_subnode_offset(fdt, child, "inner") >= 0);
    CHECK(std::string(static_cast<const char*>(fdt_getprop(fdt, child, "compatible", nullptr))) == "test,child");
    CHECK(fdt_stringlist_count(fdt, child, "list") == 2);
    int len = 0;
    const auto* big = static_cast<const fdt64_t*>(fdt_getprop(fdt, child, "big", &len));
    REQUIRE(len == 8);
    CHECK(fdt64_to_cpu(*big) == 0x1122334455667788ull);
    const auto* reg = static_cast<const fdt32_t*>(fdt_getprop(fdt, child, "reg", &len));
    REQUIRE(len == 16);
    CHECK(fdt32_to_cpu(reg[0]) == 1);
    CHECK(fdt32_to_cpu(reg[1]) == 0x1000);
    CHECK(fdt32_to_cpu(reg[3]) == 0x200);
    CHECK(fdt_getprop(fdt, child, "flag", &len) != nullptr);
    CHECK(len == 0);
}

TEST_CASE("fdt::Writer grows its buffer for large trees") {
    fdt::Writer w;
    for (int i = 0; i < 2000; ++i) {
        auto n = w.node("node", static_cast<std::uint64_t>(i));
        w.property_string("compatible", "test,a-fairly-long-compatible-string");
    }
    auto blob = w.finish();
    REQUIRE(fdt_check_header(blob.data()) == 0);
    CHECK(fdt_path_offset(blob.data(), "/node@7cf") >= 0);
}

TEST_CASE("fdt::Writer refuses a property after a child node") {
    fdt::Writer w;
    { auto child = w.node("child"); }
    CHECK_THROWS_AS(w.property_u32("late", 1), std::logic_error);
}
