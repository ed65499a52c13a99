// vmm/lkvm.1 documents every flag the command line has: the help of every command, as the
// native build of vmm/cli.cpp prints it, against the man page (the arm64 binary cannot run here).
#include "vmm/cli.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string help_of(std::vector<const char*> args) {
    args.insert(args.begin(), "lkvm");
    args.push_back("--help");
    auto command = vmm::cli::parse(static_cast<int>(args.size()), args.data());
    auto* exit = std::get_if<vmm::cli::Exit>(&command);
    REQUIRE(exit != nullptr);
    REQUIRE(exit->code == 0);
    return exit->out;
}

// Every -x and --long-flag at the start of an option line of CLI11's help.
std::set<std::string> flags_in(const std::string& help) {
    std::set<std::string> flags;
    std::istringstream lines(help);
    std::string line;
    const std::regex flag(R"((^|[ ,])(--?[A-Za-z0-9][A-Za-z0-9-]*))");
    while (std::getline(lines, line)) {
        const std::size_t first = line.find_first_not_of(' ');
        if (first == std::string::npos || line[first] != '-') continue;
        // The option column only (CLI11 puts the description after a run of spaces).
        const std::string column = line.substr(first, line.find("  ", first) - first);
        for (std::sregex_iterator it(column.begin(), column.end(), flag), end; it != end; ++it) flags.insert((*it)[2]);
    }
    return flags;
}

// roff writes a '-' as "\-".
std::string roff(const std::string& flag) {
    std::string out;
    for (char c : flag) out += c == '-' ? std::string("\\-") : std::string(1, c);
    return out;
}

}  // namespace

TEST_CASE("vmm/lkvm.1 names every flag of every command's --help") {
    std::ifstream file("vmm/lkvm.1");
    if (!file) FAIL("vmm/lkvm.1 not found: run the unit tests from the top of the tree");
    const std::string man((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::size_t checked = 0;
    for (auto command : std::vector<std::vector<const char*>>{{"run"}, {"sandbox"}, {"stop"}, {"stat"}, {"debug"}, {"list"}, {}}) {
        for (const std::string& flag : flags_in(help_of(command))) {
            INFO("lkvm " << (command.empty() ? "" : command[0]) << " " << flag);
            CHECK(man.find(roff(flag)) != std::string::npos);
            ++checked;
        }
    }
    CHECK(checked > 20);  // the help was read: run alone has more
}
