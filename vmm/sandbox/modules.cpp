#include "vmm/sandbox/modules.hpp"

#include <algorithm>
#include <set>

namespace vmm::sandbox {
namespace {

constexpr std::string_view kCompressedSuffixes[] = {".xz", ".zst", ".gz"};
// depmod resolves symbol dependencies into a tree of a few levels; a deeper chain means a
// malformed file (or a cycle), which must not recurse without end.
constexpr unsigned kMaxDepth = 32;

std::string_view strip_compression(std::string_view path) {
    for (std::string_view suffix : kCompressedSuffixes)
        if (path.ends_with(suffix)) return path.substr(0, path.size() - suffix.size());
    return path;
}

std::vector<std::string_view> words(std::string_view text) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
        std::size_t end = i;
        while (end < text.size() && text[end] != ' ' && text[end] != '\t') ++end;
        if (end > i) out.push_back(text.substr(i, end - i));
        i = end;
    }
    return out;
}

void visit(const ModuleIndex& index, const std::string& name, unsigned depth, std::set<std::string>& seen,
           std::vector<std::string>& order) {
    if (depth > kMaxDepth || !seen.insert(name).second) return;
    auto it = index.find(name);
    if (it == index.end()) return;
    for (const std::string& dep : it->second.deps) visit(index, dep, depth + 1, seen, order);
    order.push_back(it->second.path);
}

}  // namespace

std::string module_name(std::string_view path) {
    std::string_view base = path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
    base = strip_compression(base);
    if (!base.ends_with(".ko") || base.size() == 3) return {};
    std::string name(base.substr(0, base.size() - 3));
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
}

bool module_compressed(std::string_view path) { return strip_compression(path).size() != path.size(); }

ModuleIndex parse_modules_dep(std::string_view text) {
    ModuleIndex index;
    while (!text.empty()) {
        const std::size_t eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        const std::vector<std::string_view> path = words(line.substr(0, colon));
        if (path.size() != 1) continue;
        const std::string name = module_name(path.front());
        if (name.empty()) continue;
        ModuleFile file{std::string(path.front()), {}};
        for (std::string_view dep : words(line.substr(colon + 1)))
            if (std::string dep_name = module_name(dep); !dep_name.empty()) file.deps.push_back(std::move(dep_name));
        index.emplace(name, std::move(file));
    }
    return index;
}

std::vector<std::string> load_order(const ModuleIndex& index, const std::vector<std::string>& wanted) {
    std::set<std::string> seen;
    std::vector<std::string> order;
    for (std::string name : wanted) {
        std::replace(name.begin(), name.end(), '-', '_');
        visit(index, name, 0, seen, order);
    }
    return order;
}

}  // namespace vmm::sandbox
