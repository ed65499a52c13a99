#!/bin/bash
# Build the nested-rig guest artefacts from Debian packages (run guest-images/setup-host.sh first).
#
#   guest-images/build.sh
#
# Outputs (guest-images/out/, git-ignored):
#   Image            Debian arm64 6.12 kernel from bookworm-backports (a raw arm64 Image; L1 and L2)
#   initrd-l2.cpio   busybox + L2 drivers (virtio-iommu, virtio_mmio, virtio_blk, virtio-rng, virtio_net, nvme)
#                    and our viommu_tables.ko (guest-images/viommu-tables/, built here for the kernel)
#   initrd-l1.cpio   busybox + L1 drivers (nvme, vfio*, 9p, virtio_blk, virtio-rng), the L2 Image and
#                    initrd under /l2/, and (WITH_QEMU=1, the default) Debian's arm64 QEMU closure
# Downloads and intermediate trees live in the cache, outside the clone:
#   ${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}
#
# Incremental: every output carries a stamp of its inputs and is only rebuilt when they change.
# initrd-l1.cpio is a concatenation of newc archives (the kernel unpacks them in order), so a
# change of files/init-l1 rebuilds a ~3 MB piece, not the whole 120 MB image.
#
# Environment:
#   KPKG=linux-image-...-arm64   kernel package (default: the one bookworm-backports'
#                                linux-image-arm64 depends on)
#   WITH_QEMU=0|1                put Debian's arm64 QEMU into L1 (default 1; needed by the QEMU peer
#                                tests and the benchmark)
#   L1_MODS / L2_MODS            module lists (space separated, load order)
#   EXTRA_L1=DIR                 tree copied into the L1 root (default: $CACHE/extra-l1 if present)
#   FORCE=1                      ignore stamps and rebuild everything (downloads are kept)
set -euo pipefail

RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$RIG/out
CACHE=${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}
SUITE=bookworm-backports
WITH_QEMU=${WITH_QEMU:-1}
L1_MODS=${L1_MODS:-"nvme vfio vfio_iommu_type1 vfio-pci 9pnet_virtio 9p virtio_blk virtio-rng tun"}
L2_MODS=${L2_MODS:-"virtio-iommu virtio_mmio virtio_blk virtio-rng virtio_net nvme netfs 9pnet 9pnet_virtio 9p"}
EXTRA_L1=${EXTRA_L1:-$CACHE/extra-l1}
FORCE=${FORCE:-0}

T0=$SECONDS
say() { printf 'build: %s\n' "$*"; }
die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb modprobe depmod xz cpio readelf sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run guest-images/setup-host.sh (as root) first"
done
HOST_ARCH=$(dpkg --print-architecture)
if [ "$HOST_ARCH" != arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  die "dpkg does not know the arm64 architecture; run guest-images/setup-host.sh (as root) first"
fi
mkdir -p "$OUT" "$CACHE/debs"
# As root, apt would drop to the _apt user for downloads and complain that it cannot write the cache.
APT_DL_OPTS=()
[ "$(id -u)" = 0 ] && APT_DL_OPTS=(-o APT::Sandbox::User=root)

# --- stamps ----------------------------------------------------------------------------------
# inputs_hash WORD... : hash of the words; a word naming an existing file contributes its content.
inputs_hash() {
  local w
  for w in "$@"; do
    if [ -f "$w" ]; then printf 'file %s\n' "$(sha256sum <"$w" | cut -d' ' -f1)"; else printf 'word %s\n' "$w"; fi
  done | sha256sum | cut -d' ' -f1
}
# up_to_date OUTPUT HASH : true when OUTPUT exists and was built from inputs with this HASH
up_to_date() { [ "$FORCE" != 1 ] && [ -e "$1" ] && [ "$(cat "$1.stamp" 2>/dev/null)" = "$2" ]; }
mark_built() { printf '%s\n' "$2" >"$1.stamp"; }

# --- 1. downloads ----------------------------------------------------------------------------
cached_deb() { ls -1 "$CACHE/debs/$1"_*_arm64.deb 2>/dev/null | sort -V | tail -n 1; }

pick_kernel_pkg() {
  local ver name
  # The kernel bookworm-backports' meta package currently points at.
  ver=$(apt-cache madison linux-image-arm64:arm64 2>/dev/null | awk -F'|' '$3 ~ /bookworm-backports/ { gsub(/ /, "", $2); print $2; exit }')
  if [ -n "$ver" ]; then
    name=$(apt-cache show "linux-image-arm64:arm64=$ver" 2>/dev/null |
      sed -n 's/^Depends:.*\(linux-image-6\.12\.[0-9]*+deb12-arm64\).*/\1/p' | head -n 1)
    [ -n "$name" ] && { echo "$name"; return; }
  fi
  # Otherwise the newest 6.12 arm64 image apt knows about, else the newest one already downloaded.
  name=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-arm64$' 2>/dev/null | cut -d' ' -f1 | sort -V | tail -n 1)
  [ -n "$name" ] && { echo "$name"; return; }
  name=$(ls -1 "$CACHE/debs" 2>/dev/null | sed -n 's/^\(linux-image-6\.12\.[0-9]*+deb12-arm64\)_.*/\1/p' | sort -V | tail -n 1)
  [ -n "$name" ] && { echo "$name"; return; }
  die "cannot find a linux-image-6.12.*+deb12-arm64 package (is bookworm-backports configured? run setup-host.sh, then apt-get update)"
}

download() {  # download PKG [apt options...] : fetch PKG:arm64 into the cache unless present
  local pkg=$1; shift
  [ -n "$(cached_deb "$pkg")" ] && return 0
  local size t0=$SECONDS
  size=$(apt-cache show "$pkg:arm64" 2>/dev/null | sed -n 's/^Size: //p' | sort -n | tail -n 1)
  say "downloading $pkg:arm64${size:+ ($((size / 1048576)) MiB)}"
  (cd "$CACHE/debs" && apt-get download -q "${APT_DL_OPTS[@]}" "$@" "$pkg:arm64" >/dev/null) ||
    die "apt-get download $pkg:arm64 failed (apt-get update needed? network?)"
  say "  done in $((SECONDS - t0))s"
}

KPKG=${KPKG:-$(pick_kernel_pkg)}
download "$KPKG" -t "$SUITE"
download busybox-static
KDEB=$(cached_deb "$KPKG")
BBDEB=$(cached_deb busybox-static)

QROOT=$CACHE/qemu-apt
if [ "$WITH_QEMU" = 1 ] && ! ls "$QROOT"/archives/qemu-system-arm_*.deb >/dev/null 2>&1; then
  # Resolve qemu-system-arm:arm64 and its whole Depends closure against an empty dpkg status, so
  # nothing on the host counts as installed; download only.
  say "downloading Debian's arm64 QEMU and its dependencies"
  mkdir -p "$QROOT/archives/partial"
  : >"$QROOT/status"
  apt-get -q -y -d --no-install-recommends -t "$SUITE" "${APT_DL_OPTS[@]}" \
    -o Dir::State::status="$QROOT/status" -o Dir::Cache::archives="$QROOT/archives" \
    -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 \
    install qemu-system-arm 2>&1 | tee "$QROOT/download.log" |
    # Progress: how much in all, then one line per package as it arrives (N/TOTAL name size).
    awk '/newly installed/ { total = $3 } /^Need to get/ { print "build:   " $0; fflush() }
         /^Get:/ { n++; printf "build:   %d/%s %s %s %s\n", n, total, $5, $(NF - 1), $NF; fflush() }' ||
    { tail -n 20 "$QROOT/download.log" >&2; die "could not download the arm64 QEMU closure"; }
fi

# --- 2. unpack kernel and busybox -------------------------------------------------------------
extract_once() {  # extract_once DEB DIR : unpack DEB into DIR unless already done for this DEB
  if [ "$(cat "$2/.from" 2>/dev/null)" != "$(basename "$1")" ]; then
    rm -rf "$2"; mkdir -p "$2"
    dpkg-deb -x "$1" "$2"
    basename "$1" >"$2/.from"
  fi
}
KROOT=$CACHE/kernel
extract_once "$KDEB" "$KROOT"
MODBASE=lib/modules
[ -d "$KROOT/$MODBASE" ] || MODBASE=usr/lib/modules
KREL=$(ls -1 "$KROOT/$MODBASE" | head -n 1)
[ -n "$KREL" ] || die "no modules directory in $KDEB"
[ -f "$KROOT/$MODBASE/$KREL/modules.dep" ] || depmod -b "$KROOT" "$KREL"
BBROOT=$CACHE/busybox
extract_once "$BBDEB" "$BBROOT"

if ! cmp -s "$KROOT/boot/vmlinuz-$KREL" "$OUT/Image" 2>/dev/null; then
  cp "$KROOT/boot/vmlinuz-$KREL" "$OUT/Image"   # Debian's arm64 vmlinuz is a raw Image
  cp "$KROOT/boot/config-$KREL" "$OUT/config-$KREL"
  say "Image: $KREL"
fi
echo "$KREL" >"$OUT/KREL"

# --- helpers for the root trees ----------------------------------------------------------------
new_root() {  # new_root DIR INIT : busybox + directory skeleton + /init
  rm -rf "$1"
  mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,root,"$MODBASE"}
  cp "$BBROOT/bin/busybox" "$1/bin/busybox"
  ln -s busybox "$1/bin/sh"   # the rest of the applet links are made by init (busybox --install)
  install -m 0755 "$2" "$1/init"
}
add_modules() {  # add_modules ROOT MODULE... : module closures (decompressed) + depmod
  local root=$1 m kind path rel dst
  shift
  local files=()
  for m in "$@"; do
    local deps
    deps=$(modprobe -d "$KROOT" -S "$KREL" --show-depends "$m" 2>&1) ||
      die "module '$m' not found for kernel $KREL: $deps"
    while read -r kind path _; do
      [ "$kind" = insmod ] && files+=("$path")
    done <<<"$deps"
  done
  mkdir -p "$root/$MODBASE/$KREL"
  if [ ${#files[@]} -gt 0 ]; then
    for path in $(printf '%s\n' "${files[@]}" | sort -u); do
      rel=${path#"$KROOT"/}
      dst=$root/${rel%.xz}
      dst=${dst%.zst}
      mkdir -p "$(dirname "$dst")"
      case $path in
        *.xz) xz -dc "$path" >"$dst" ;;
        *.zst) zstd -qdc "$path" >"$dst" ;;
        *) cp "$path" "$dst" ;;
      esac
    done
  fi
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    [ -f "$KROOT/$MODBASE/$KREL/$f" ] && cp "$KROOT/$MODBASE/$KREL/$f" "$root/$MODBASE/$KREL/"
  done
  depmod -b "$root" "$KREL"
  echo "$*" >"$root/etc/rig-modules"
}
make_cpio() {  # make_cpio DIR FILE : uncompressed newc archive of DIR, files owned by root
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2.tmp"
  mv "$2.tmp" "$2"
}
# ELF NEEDED closure of the given binaries inside the unpacked QEMU tree (prints host paths).
needed_closure() {
  local todo=("$@") seen=" " f lib p
  while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[0]}; todo=("${todo[@]:1}")
    for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      case $seen in *" $lib "*) continue ;; esac
      seen="$seen$lib "
      p=
      for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
        [ -e "$QTREE/$d/$lib" ] && { p=$QTREE/$d/$lib; break; }
      done
      [ -n "$p" ] || die "QEMU closure: $lib (needed by ${f#"$QTREE"/}) is missing"
      echo "$p"
      todo+=("$(readlink -f "$p")")
    done
  done
}

# --- 3. our page-table-handover driver, built for this kernel (guest-images/viommu-tables/) ------
VT_SRC=("$RIG/viommu-tables/viommu_tables.c" "$RIG/viommu-tables/Kbuild" "$RIG/viommu-tables/build.sh"
  "$RIG/../iommu/uapi/virtio_iommu_tables.h")
VT_KO=$CACHE/viommu-tables/$KREL/viommu_tables.ko
h=$(inputs_hash "${VT_SRC[@]}" "$KREL")
if up_to_date "$VT_KO" "$h"; then
  say "viommu_tables.ko up to date"
else
  LKVM_CACHE=$CACHE "$RIG/viommu-tables/build.sh" "${KREL%-arm64}" "$(dirname "$VT_KO")" ||
    die "could not build viommu_tables.ko for $KREL"
  mark_built "$VT_KO" "$h"
fi

# --- 4. L2 initramfs ----------------------------------------------------------------------------
h=$(inputs_hash "$RIG/files/init-l2" "$L2_MODS" "$KREL" "$(basename "$KDEB")" "$(basename "$BBDEB")" "$VT_KO")
if up_to_date "$OUT/initrd-l2.cpio" "$h"; then
  say "initrd-l2.cpio up to date"
else
  R=$CACHE/root-l2
  new_root "$R" "$RIG/files/init-l2"
  mkdir -p "$R/$MODBASE/$KREL/extra"
  cp "$VT_KO" "$R/$MODBASE/$KREL/extra/"   # add_modules' depmod indexes it
  add_modules "$R" $L2_MODS
  make_cpio "$R" "$OUT/initrd-l2.cpio"
  mark_built "$OUT/initrd-l2.cpio" "$h"
  say "initrd-l2.cpio built ($(du -h "$OUT/initrd-l2.cpio" | cut -f1))"
fi

# --- 5. L1 initramfs, built as concatenated pieces -----------------------------------------------
PIECES=$CACHE/l1-pieces
mkdir -p "$PIECES"
pieces=()

# 5a. busybox, init, L1 drivers
h=$(inputs_hash "$RIG/files/init-l1" "$L1_MODS" "$KREL" "$(basename "$KDEB")" "$(basename "$BBDEB")")
if ! up_to_date "$PIECES/base.cpio" "$h"; then
  R=$CACHE/root-l1
  new_root "$R" "$RIG/files/init-l1"
  add_modules "$R" $L1_MODS
  make_cpio "$R" "$PIECES/base.cpio"
  mark_built "$PIECES/base.cpio" "$h"
  say "L1 piece base rebuilt"
fi
pieces+=("$PIECES/base.cpio")

# 5b. the L2 kernel and initramfs under /l2
h=$(inputs_hash "$(basename "$KDEB")" "$OUT/initrd-l2.cpio")
if ! up_to_date "$PIECES/l2.cpio" "$h"; then
  R=$CACHE/root-l1-l2
  rm -rf "$R"; mkdir -p "$R/l2"
  cp "$OUT/Image" "$R/l2/Image"
  cp "$OUT/initrd-l2.cpio" "$R/l2/initrd-l2.cpio"
  make_cpio "$R" "$PIECES/l2.cpio"
  rm -rf "$R"
  mark_built "$PIECES/l2.cpio" "$h"
  say "L1 piece l2 rebuilt"
fi
pieces+=("$PIECES/l2.cpio")

# 5c. Debian's arm64 QEMU: the binary, its shared libraries and the dynamic loader
if [ "$WITH_QEMU" = 1 ]; then
  qdebs=$(cd "$QROOT/archives" && ls -1 ./*.deb | LC_ALL=C sort)
  h=$(inputs_hash "$qdebs")
  if ! up_to_date "$PIECES/qemu.cpio" "$h"; then
    QTREE=$CACHE/qemu-tree
    rm -rf "$QTREE"; mkdir -p "$QTREE"
    for d in "$QROOT"/archives/*.deb; do dpkg-deb -x "$d" "$QTREE"; done
    R=$CACHE/root-l1-qemu
    rm -rf "$R"
    mkdir -p "$R/usr/bin" "$R/usr/lib/aarch64-linux-gnu" "$R/lib"
    cp "$QTREE/usr/bin/qemu-system-aarch64" "$R/usr/bin/"
    for p in $(needed_closure "$QTREE/usr/bin/qemu-system-aarch64" | sort -u); do
      cp -L "$p" "$R/usr/lib/aarch64-linux-gnu/"
    done
    cp -L "$QTREE/lib/ld-linux-aarch64.so.1" "$R/lib/"
    ln -s ../usr/lib/aarch64-linux-gnu "$R/lib/aarch64-linux-gnu"
    make_cpio "$R" "$PIECES/qemu.cpio"
    rm -rf "$R" "$QTREE"   # ~0.4 GB unpacked; the .debs stay cached
    mark_built "$PIECES/qemu.cpio" "$h"
    say "L1 piece qemu rebuilt ($(du -h "$PIECES/qemu.cpio" | cut -f1))"
  fi
  pieces+=("$PIECES/qemu.cpio")
fi

# 5d. optional extra tree (e.g. tools for experiments); the lkvm under test comes via 9p instead
if [ -d "$EXTRA_L1" ]; then
  h=$(inputs_hash "$(cd "$EXTRA_L1" && find . -printf '%p %s %T@ %l\n' | LC_ALL=C sort)")
  if ! up_to_date "$PIECES/extra.cpio" "$h"; then
    make_cpio "$EXTRA_L1" "$PIECES/extra.cpio"
    mark_built "$PIECES/extra.cpio" "$h"
    say "L1 piece extra rebuilt"
  fi
  pieces+=("$PIECES/extra.cpio")
fi

h=$(inputs_hash "${pieces[@]/%/.stamp}")
if up_to_date "$OUT/initrd-l1.cpio" "$h"; then
  say "initrd-l1.cpio up to date"
else
  cat "${pieces[@]}" >"$OUT/initrd-l1.cpio.tmp"
  mv "$OUT/initrd-l1.cpio.tmp" "$OUT/initrd-l1.cpio"
  mark_built "$OUT/initrd-l1.cpio" "$h"
  say "initrd-l1.cpio built ($(du -h "$OUT/initrd-l1.cpio" | cut -f1), pieces: $(for p in "${pieces[@]}"; do basename "$p" .cpio; done | tr '\n' ' '))"
fi
say "done in $((SECONDS - T0))s (kernel $KREL, cache $CACHE)"
