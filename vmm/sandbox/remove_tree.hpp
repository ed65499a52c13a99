// Removing a directory tree that a guest may have shaped (lkvm sandbox's private directory),
// whatever its depth: at most two descriptors open at a time, no recursion, every step checked.
#pragma once

#include <string>

namespace vmm::sandbox {

// Removes `path` and everything below it without following symlinks. Empty on success (also when
// `path` does not exist), else one line naming what could not be removed and why; what could be
// removed before that is gone.
std::string remove_tree(const std::string& path);

}  // namespace vmm::sandbox
