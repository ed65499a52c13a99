// Which kernel modules the sandbox's guest init loads, in which order, from the initrd's
// /lib/modules/RELEASE/modules.dep (written by depmod: "PATH: DEP-PATH ...", one line per
// module, paths relative to that directory). Pure functions: the loading is in guest_init.cpp.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::sandbox {

struct ModuleFile {
    std::string path;               // relative to /lib/modules/RELEASE
    std::vector<std::string> deps;  // module names
};

// Module name -> its file and direct dependencies. Lines that do not parse are skipped.
using ModuleIndex = std::map<std::string, ModuleFile>;

// "kernel/fs/9p/9p.ko.xz" -> "9p"; "virtio-rng.ko" -> "virtio_rng" (the kernel treats '-' and
// '_' alike in module names; kernel/params.c). Empty when `path` names no module file.
std::string module_name(std::string_view path);
// Whether the file is compressed (finit_module's MODULE_INIT_COMPRESSED_FILE, kernel/module/main.c).
bool module_compressed(std::string_view path);

ModuleIndex parse_modules_dep(std::string_view text);

// The files to load so that every module of `wanted` is loaded, each after its dependencies
// (depth first), none twice. Modules not in the index (built in, or absent) are skipped:
// the mount that needs them reports the problem.
std::vector<std::string> load_order(const ModuleIndex& index, const std::vector<std::string>& wanted);

}  // namespace vmm::sandbox
