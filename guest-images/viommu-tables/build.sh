#!/bin/bash
# Build viommu_tables.ko (our page-table-handover virtio-iommu driver) for one Debian arm64 kernel,
# out of tree, from that kernel's own packages:
#
#   guest-images/viommu-tables/build.sh 6.12.95+deb12 [OUT-DIR]
#
# VERSION is the Debian kernel ABI name without the flavour: the packages are
# linux-headers-VERSION-arm64, linux-headers-VERSION-common and linux-kbuild-VERSION (the kbuild
# package of the machine running this script, so that its host tools run here). They are fetched
# with `apt-get download` and unpacked with `dpkg-deb -x` into the cache; nothing is installed.
# The same command cross-compiles on x86_64 (ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-) and
# builds natively on arm64. The suite carrying the packages must be in apt's sources (for the
# rig's kernel, bookworm-backports: guest-images/setup-host.sh adds it).
#
# Output: OUT-DIR/viommu_tables.ko (default guest-images/viommu-tables/out/VERSION/).
# Cache:  ${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}/kbuild/VERSION
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TREE=$(cd "$HERE/../.." && pwd)
say() { printf 'viommu-tables: %s\n' "$*"; }
die() { printf 'viommu-tables: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 DEBIAN-KERNEL-VERSION [OUT-DIR]   (e.g. 6.12.95+deb12)"
VER=$1
[[ $VER =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?[a-z0-9.+~-]*$ ]] ||
  die "'$VER' is not a Debian kernel version such as 6.12.95+deb12 (no flavour suffix)"
VER=${VER%-arm64}
OUT=${2:-$HERE/out/$VER}
CACHE=${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}/kbuild/$VER
BUILD_ARCH=$(dpkg --print-architecture)
KREL=$VER-arm64

for tool in apt-get dpkg-deb make strings aarch64-linux-gnu-ld aarch64-linux-gnu-strip; do
  command -v "$tool" >/dev/null ||
    die "'$tool' not found; run guest-images/setup-host.sh (as root) first"
done

# --- 1. the kernel's build packages ---------------------------------------------------------------
APT_DL_OPTS=()
[ "$(id -u)" = 0 ] && APT_DL_OPTS=(-o APT::Sandbox::User=root)   # root: apt would drop to _apt
mkdir -p "$CACHE/debs"
PKGS=("linux-headers-$KREL:arm64" "linux-headers-$VER-common" "linux-kbuild-$VER:$BUILD_ARCH")
for p in "${PKGS[@]}"; do
  name=${p%%:*}
  ls "$CACHE/debs/${name}"_*.deb >/dev/null 2>&1 && continue
  say "downloading $p"
  (cd "$CACHE/debs" && apt-get download -q "${APT_DL_OPTS[@]}" "$p" >/dev/null 2>"$CACHE/apt.err") ||
    die "apt-get download $p failed ($(grep -m1 '^E:' "$CACHE/apt.err")): is the suite that carries kernel $VER in apt's sources (apt-get update)?"
done
ROOT=$CACHE/root
debs=$(cd "$CACHE/debs" && ls -1 ./*.deb | LC_ALL=C sort)
if [ "$(cat "$ROOT/.from" 2>/dev/null)" != "$debs" ]; then
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for d in "$CACHE"/debs/*.deb; do dpkg-deb -x "$d" "$ROOT"; done
  printf '%s\n' "$debs" >"$ROOT/.from"
fi
KDIR=$ROOT/usr/src/linux-headers-$KREL
COMMON=$ROOT/usr/src/linux-headers-$VER-common
[ -f "$KDIR/.config" ] && [ -f "$COMMON/Makefile" ] || die "the packages of $VER lack $KDIR/.config or $COMMON/Makefile"
# The flavour's Makefile includes the common tree by its installed path (/usr/src/...); point it at
# the unpacked copy instead.
printf 'include %s/Makefile\n' "$COMMON" >"$KDIR/Makefile"

# --- 2. compiler: the kernel's own major version if this machine has it ---------------------------
want_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$KDIR/.config")
want_major=$(($(sed -n 's/^CONFIG_GCC_VERSION=//p' "$KDIR/.config") / 10000))
CROSS=aarch64-linux-gnu-
if command -v "${CROSS}gcc-$want_major" >/dev/null; then
  CC=${CROSS}gcc-$want_major
else
  command -v "${CROSS}gcc" >/dev/null || die "no ${CROSS}gcc; run guest-images/setup-host.sh first"
  CC=${CROSS}gcc
fi
have_major=$("$CC" -dumpversion | cut -d. -f1)
if [ "$have_major" != "$want_major" ]; then
  say "WARNING: kernel $KREL was built with '$want_text' but this machine has $CC (GCC $have_major):"
  say "WARNING: the module is built with GCC $have_major anyway; install gcc-$want_major for a matching build"
fi

# --- 3. build out of tree, in a scratch copy (kbuild writes its objects next to the sources) ------
BUILD=$CACHE/build
rm -rf "$BUILD"; mkdir -p "$BUILD"
cp "$HERE/Kbuild" "$HERE/viommu_tables.c" "$BUILD/"
say "building for $KREL with $CC on $BUILD_ARCH"
# CONFIG_DEBUG_INFO_BTF_MODULES= : no BTF section for the module (it would need pahole here; the
# kernel loads modules without one).
make -s -C "$KDIR" M="$BUILD" ARCH=arm64 CROSS_COMPILE="$CROSS" CC="$CC" \
  LKVM_UAPI="$TREE/iommu/uapi" CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$BUILD/make.log" 2>&1 ||
  { tail -n 40 "$BUILD/make.log" >&2; die "module build failed (log: $BUILD/make.log)"; }
grep -v '^  *\(CC\|MODPOST\|LD\|BTF\)' "$BUILD/make.log" | sed 's/^/viommu-tables: make: /' || true
mkdir -p "$OUT"
# Without debug information: 0.5 MB less in every initramfs (the unstripped module stays in $BUILD).
"${CROSS}strip" --strip-debug -o "$OUT/viommu_tables.ko" "$BUILD/viommu_tables.ko"
magic=$(strings "$OUT/viommu_tables.ko" | sed -n 's/^vermagic=//p' | head -n 1)
case $magic in "$KREL "*) ;; *) die "built module has vermagic '$magic', wanted $KREL" ;; esac
say "$OUT/viommu_tables.ko (vermagic $magic)"
