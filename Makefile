# lkvm: one Makefile, no recursion. Sources are found per folder by wildcard, so adding a file needs
# no edit here; the folder list below is the table of contents of the project.
#
#   make            native unit tests + the arm64 lkvm (cross-compiled on x86, native on arm64)
#   make test       everything CI runs: host setup, then tests/run-all.sh test (make check's stages,
#                   the arm64 build and the rig tests)
#   make check      the fast tier, no root, no rig: citation, layer and format checks, unit tests,
#                   ASan+UBSan unit tests, fuzz corpora replayed, every benchmark built
#   make unit       native unit tests only (no KVM, no root)
#   make asan       unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make lkvm       the arm64 VMM binary: $(BUILD)/arm64/lkvm (build only)
#   make install    lkvm, its man page and bash completion under PREFIX (default /usr/local), DESTDIR=
#   make uninstall  removes what make install put there
#   make fuzz       libFuzzer targets, each run for FUZZ_SECONDS (clang)
#   make demo       boot the demo guest (directly on arm64 KVM; in the nested rig on x86)
#   make bench      benchmarks against peers measured in the same run
#   make format     clang-format the project's C++ sources in place (.clang-format)
#
# BUILD=dir puts every output under another directory (handy when several trees build at once).

BUILD    ?= build
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
HOST_ARCH := $(shell uname -m)

SRCS_vmm     := $(wildcard vmm/*.cpp vmm/base/*.cpp vmm/control/*.cpp vmm/sandbox/*.cpp)
SRCS_devices := $(wildcard devices/*.cpp devices/*/*.cpp)
SRCS_virtio  := $(wildcard virtio/*.cpp)
SRCS_iommu   := $(wildcard iommu/*.cpp)
SRCS_fdt     := $(wildcard fdt/*.cpp)

# Everything that talks to /dev/kvm (arm64 KVM UAPI) lives in vmm/kvm/, plus its three users: the
# machine, main and vfio_setup (VFIO wired into KVM). They build only for the arm64 target;
# everything else is portable and unit-tested on any host.
SRCS_kvm      := $(wildcard vmm/kvm/*.cpp) vmm/machine.cpp vmm/vfio_setup.cpp vmm/main.cpp
SRCS_all      := $(SRCS_vmm) $(SRCS_devices) $(SRCS_virtio) $(SRCS_iommu) $(SRCS_fdt) $(wildcard vmm/kvm/*.cpp)
SRCS_portable := $(filter-out $(SRCS_kvm),$(SRCS_all))
SRCS_lkvm     := $(filter-out vmm/main.cpp,$(SRCS_all))

TEST_SRCS := $(wildcard tests/*.cpp tests/vmm/*.cpp tests/vmm/*/*.cpp tests/devices/*.cpp tests/devices/*/*.cpp \
                        tests/virtio/*.cpp tests/iommu/*.cpp tests/fdt/*.cpp tests/support/*.cpp)
FUZZ_SRCS  := $(wildcard tests/fuzz/*.cpp)
BENCH_SRCS := $(wildcard tests/bench/*.cpp)

WARNINGS := -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wsuggest-override -Wimplicit-fallthrough
CPPFLAGS := -I. -MMD -MP
CXXSTD   := -std=c++20
OPT      ?= -O2 -g

# ---- flavours: native (unit tests), asan (unit tests and fuzzers under sanitizers), arm64 (the VMM) --
# Host builds carry line tables, not full debug information (a third of the compile time): stack
# traces keep file:line, and `make NATIVE_OPT='-O0 -g' TEST_OPT='-O0 -g'` gives a debugger more.
# Tests need no -O2 either: -O1 compiles them in half the time. The asan flavour is built by clang with libFuzzer's
# coverage hooks, so that the unit tests under sanitizers and the fuzz targets link the same
# objects: one sanitizer build of the tree instead of two.
NATIVE_CXX   ?= g++
NATIVE_OPT   ?= -O2 -g1
NATIVE_FLAGS := $(CXXSTD) $(WARNINGS) $(NATIVE_OPT)
TEST_OPT     ?= -O1 -g1
SAN_CXX      ?= clang++
ASAN_FLAGS   := $(CXXSTD) $(WARNINGS) -O1 -g1 -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined

LKVM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lkvm-rig
ifeq ($(HOST_ARCH),aarch64)
ARM64_CXX ?= g++
ARM64_LIBFDT :=
else
# Cross build: libfdt.a for arm64 comes from the arm64 .deb, extracted into the cache (see
# guest-images/arm64-libfdt.sh for why it is not installed).
ARM64_CXX ?= aarch64-linux-gnu-g++
ARM64_SYSROOT := $(LKVM_CACHE)/arm64-libfdt
ARM64_LIBFDT := $(ARM64_SYSROOT)/usr/lib/aarch64-linux-gnu/libfdt.a
endif
# libslirp has no static library in Debian: guest-images/arm64-slirp.sh builds one from Debian's
# source package against the static glib and pcre2 of the arm64 -dev .debs.
ARM64_SLIRP_ROOT := $(LKVM_CACHE)/arm64-slirp
ARM64_SLIRP := $(ARM64_SLIRP_ROOT)/usr/lib/aarch64-linux-gnu/libslirp.a
ARM64_SLIRP_LIBS := $(ARM64_SLIRP) $(addprefix $(ARM64_SLIRP_ROOT)/usr/lib/aarch64-linux-gnu/,libglib-2.0.a libpcre2-8.a)
ARM64_CPPFLAGS := -isystem $(ARM64_SLIRP_ROOT)/usr/include

# Sections per function and --gc-sections drop the unused parts of the static libc/libstdc++ (a
# fifth of the text): less for the host to page in and keep resident for every VM.
ARM64_FLAGS := $(CXXSTD) $(WARNINGS) $(OPT) -ffunction-sections -fdata-sections
ARM64_LDFLAGS := -static -pthread -Wl,--gc-sections

# Native links (unit tests, fuzzers, micro-benchmarks) use the shared Debian libraries.
NATIVE_LIBS := -lfdt -lslirp -pthread

objs = $(patsubst %.cpp,$(BUILD)/$(1)/obj/%.o,$(2))

NATIVE_LIB := $(BUILD)/native/libvmm.a
ASAN_LIB   := $(BUILD)/asan/libvmm.a
UNIT       := $(BUILD)/native/unit-tests
UNIT_ASAN  := $(BUILD)/asan/unit-tests
LKVM       := $(BUILD)/arm64/lkvm

.PHONY: all unit asan lkvm test check fuzz fuzz-build bench bench-build demo clean setup format install uninstall
all: unit lkvm

$(BUILD)/native/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(NATIVE_CXX) $(NATIVE_FLAGS) $(CPPFLAGS) -c $< -o $@
$(BUILD)/native/obj/tests/%.o: tests/%.cpp
	@mkdir -p $(dir $@)
	$(NATIVE_CXX) $(CXXSTD) $(WARNINGS) $(TEST_OPT) $(CPPFLAGS) -c $< -o $@
$(BUILD)/asan/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(SAN_CXX) $(ASAN_FLAGS) -fsanitize=fuzzer-no-link $(CPPFLAGS) -c $< -o $@
$(BUILD)/arm64/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(ARM64_CXX) $(ARM64_FLAGS) $(CPPFLAGS) $(ARM64_CPPFLAGS) -c $< -o $@

$(NATIVE_LIB): $(call objs,native,$(SRCS_portable))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(ASAN_LIB): $(call objs,asan,$(SRCS_portable))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^

$(UNIT): $(call objs,native,$(TEST_SRCS)) $(NATIVE_LIB)
	$(NATIVE_CXX) $(NATIVE_FLAGS) -o $@ $^ $(NATIVE_LIBS)
$(UNIT_ASAN): $(call objs,asan,$(TEST_SRCS)) $(ASAN_LIB)
	$(SAN_CXX) $(ASAN_FLAGS) -o $@ $^ $(NATIVE_LIBS)

# `lkvm --version` names the commit it was built from. Only vmm/cli.cpp sees it, and a stamp file
# that changes only when the description does rebuilds just that object.
GIT_COMMIT := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
VERSION_STAMP := $(BUILD)/git-commit.stamp
$(VERSION_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(GIT_COMMIT)' | cmp -s - $@ || echo '$(GIT_COMMIT)' >$@
FORCE:
$(foreach flavour,native asan arm64,$(BUILD)/$(flavour)/obj/vmm/cli.o): $(VERSION_STAMP)
$(foreach flavour,native asan arm64,$(BUILD)/$(flavour)/obj/vmm/cli.o): CPPFLAGS += -DLKVM_GIT_COMMIT='"$(GIT_COMMIT)"'

$(LKVM): $(call objs,arm64,$(SRCS_lkvm) vmm/main.cpp) $(ARM64_LIBFDT) $(ARM64_SLIRP)
	$(ARM64_CXX) $(ARM64_FLAGS) -o $@ $(filter %.o,$^) $(ARM64_LDFLAGS) $(or $(ARM64_LIBFDT),-lfdt) $(ARM64_SLIRP_LIBS)
$(ARM64_LIBFDT):
	guest-images/arm64-libfdt.sh $(ARM64_SYSROOT)
$(ARM64_SLIRP):
	guest-images/arm64-slirp.sh $(ARM64_SLIRP_ROOT)
# The slirp headers must exist before the first arm64 object that includes them is compiled.
$(BUILD)/arm64/obj/devices/net/slirp_backend.o: | $(ARM64_SLIRP)

unit: $(UNIT)
	$(UNIT)
asan: $(UNIT_ASAN)
	UBSAN_OPTIONS=print_stacktrace=1 $(UNIT_ASAN)
lkvm: $(LKVM)

# ---- fuzzing (clang + libFuzzer), linked from the asan flavour's objects ------------------------------
FUZZ_SECONDS ?= 60
FUZZ_BINS    := $(patsubst tests/fuzz/%.cpp,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SUPPORT := $(call objs,asan,$(filter-out tests/main.cpp,$(wildcard tests/support/*.cpp)))

$(BUILD)/fuzz/%: $(BUILD)/asan/obj/tests/fuzz/%.o $(FUZZ_SUPPORT) $(ASAN_LIB)
	@mkdir -p $(dir $@)
	$(SAN_CXX) $(ASAN_FLAGS) -fsanitize=fuzzer -o $@ $^ $(NATIVE_LIBS)
fuzz-build: $(FUZZ_BINS)
fuzz: $(FUZZ_BINS)
	tests/fuzz/run.sh $(BUILD)/fuzz $(FUZZ_SECONDS)

# ---- micro-benchmarks (host-native) and rig benchmarks -----------------------------------------------
BENCH_BINS := $(patsubst tests/bench/%.cpp,$(BUILD)/bench/%,$(BENCH_SRCS))
$(BUILD)/bench/%: tests/bench/%.cpp $(NATIVE_LIB)
	@mkdir -p $(dir $@)
	$(NATIVE_CXX) $(NATIVE_FLAGS) $(CPPFLAGS) -o $@ $< $(NATIVE_LIB) $(NATIVE_LIBS)
# bench-build compiles every micro-benchmark without running anything, so `make test` and
# `make check` catch a benchmark that no longer builds.
bench-build: $(BENCH_BINS)
bench: $(BENCH_BINS) $(LKVM)
	tests/bench/run.sh $(BUILD)

# ---- the commands of the README --------------------------------------------------------------------
setup:
	guest-images/setup-host.sh
test: setup
	BUILD=$(BUILD) JOBS=$(JOBS) tests/run-all.sh test
check:
	BUILD=$(BUILD) JOBS=$(JOBS) tests/run-all.sh check
demo: setup
	BUILD=$(BUILD) JOBS=$(JOBS) guest-images/demo.sh

# ---- install ---------------------------------------------------------------------------------------
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(DESTDIR)$(PREFIX)/bin
MANDIR  := $(DESTDIR)$(PREFIX)/share/man/man1
COMPDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
install: $(LKVM)
	install -D -m 0755 $(LKVM) $(BINDIR)/lkvm
	install -D -m 0644 vmm/lkvm.1 $(MANDIR)/lkvm.1
	install -D -m 0644 vmm/lkvm.bash-completion $(COMPDIR)/lkvm
uninstall:
	rm -f $(BINDIR)/lkvm $(MANDIR)/lkvm.1 $(COMPDIR)/lkvm

format:
	tests/check-format.sh --fix
clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
