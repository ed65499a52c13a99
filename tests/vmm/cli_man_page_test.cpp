// vmm/lkvm.1 documents every flag the command line has: the help of every command, as the
// native build of vmm/cli.cpp prints it, against the man page (the arm64 binary cannot run here).
#include "vmm/cli.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
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
    auto flag_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; };
    while (std::getline(lines, line)) {
        const std::size_t first = line.find_first_not_of(' ');
        if (first == std::string::npos || line[first] != '-') continue;
        // The option column only (CLI11 puts the description after a run of spaces); its words,
        // split at ' ' and ',', that start with '-' and a letter or digit are the flags.
        const std::string column = line.substr(first, line.find("  ", first) - first);
        for (std::size_t at = 0; at < column.size();) {
            const std::size_t end = std::min(column.find_first_of(" ,", at), column.size());
            std::string word = column.substr(at, end - at);
            at = end + 1;
            const std::size_t dashes = word.starts_with("--") ? 2 : word.starts_with("-") ? 1 : 0;
            if (dashes == 0 || word.size() == dashes || !std::isalnum(static_cast<unsigned char>(word[dashes])))
                continue;
            std::size_t length = dashes;
            while (length < word.size() && flag_char(word[length])) ++length;
            flags.insert(word.substr(0, length));
        }
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
    for (auto command :
         std::vector<std::vector<const char*>>{{"run"}, {"sandbox"}, {"stop"}, {"stat"}, {"debug"}, {"list"}, {}}) {
        for (const std::string& flag : flags_in(help_of(command))) {
            INFO("lkvm " << std::string(command.empty() ? "" : command[0]) << " " << flag);
            CHECK(man.find(roff(flag)) != std::string::npos);
            ++checked;
        }
    }
    CHECK(checked > 20);  // the help was read: run alone has more
}
