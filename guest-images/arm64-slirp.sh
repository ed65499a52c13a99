#!/bin/bash
# Provides a static libslirp for the arm64 cross build (the arm64 lkvm is linked statically: it
# runs in L1 from a 9p share). Debian ships libslirp only as a shared library, so this builds
# libslirp.a from Debian's own source package (libslirp, fetched through apt with a private
# deb-src list on this machine's Debian mirror) against glib and pcre2 from the arm64 -dev .debs
# (libglib-2.0.a, libpcre2-8.a), all extracted into DEST; nothing is installed.
# usage: arm64-slirp.sh DEST    (DEST/usr/lib/aarch64-linux-gnu/libslirp.a appears)
set -euo pipefail
dest=${1:?usage: arm64-slirp.sh DEST}
lib=$dest/usr/lib/aarch64-linux-gnu
[ -f "$lib/libslirp.a" ] && [ -f "$lib/libglib-2.0.a" ] && exit 0
die() { echo "arm64-slirp: $*" >&2; exit 1; }
cache=${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}/debs
CC=${ARM64_CC:-aarch64-linux-gnu-gcc}
command -v "$CC" >/dev/null || die "no $CC; run guest-images/setup-host.sh as root"
mkdir -p "$cache" "$dest"
cd "$cache"
# The arm64 -dev packages are not co-installable with the native ones the unit tests use; they
# are downloaded and extracted only.
for p in libglib2.0-dev libpcre2-dev libslirp-dev; do
    if ! ls "${p}"_*_arm64.deb >/dev/null 2>&1; then
        [ "$(dpkg --print-architecture)" = arm64 ] || dpkg --print-foreign-architectures | grep -qx arm64 ||
            die "the arm64 dpkg architecture is not enabled; run guest-images/setup-host.sh as root"
        echo "arm64-slirp: downloading $p:arm64 ($(apt-cache show --no-all-versions "$p:arm64" 2>/dev/null |
            sed -n 's/^Size: //p' | head -n 1 | awk '{ if ($1 < 1048576) printf "%d KiB", $1 / 1024; else printf "%.1f MiB", $1 / 1048576 }'))"
        apt-get download "$p:arm64" >/dev/null 2>&1 || die "apt-get download $p:arm64 failed"
    fi
    dpkg-deb -x "$(ls "${p}"_*_arm64.deb | head -1)" "$dest"
done
[ -f "$lib/libglib-2.0.a" ] && [ -f "$lib/libpcre2-8.a" ] || die "no libglib-2.0.a / libpcre2-8.a in the packages"

# The source package, once, with a deb-src list private to this script (the host's apt
# configuration is left alone). The mirror is the one this machine's apt already uses.
srcdir=$cache/libslirp-src
if ! ls "$srcdir"/libslirp_*.orig.tar.* >/dev/null 2>&1; then
    mirror=$(apt-get indextargets --format '$(SITE)' 'Created-By: Packages' 'Suite: bookworm' 2>/dev/null | head -1 || true)
    [ -n "$mirror" ] || mirror=$(grep -hsoE '^(deb|URIs:)[^#]*https?://[^ ]+' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -oE 'https?://[^ ]+' | head -1 || true)
    [ -n "$mirror" ] || die "cannot find the Debian mirror in the apt configuration"
    apt_dir=$cache/apt-src
    mkdir -p "$apt_dir/lists/partial" "$srcdir"
    echo "deb-src ${mirror%/} bookworm main" > "$apt_dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt_dir/lists")
    echo "arm64-slirp: downloading the libslirp source package"
    apt-get "${opts[@]}" update >/dev/null 2>&1 || die "apt-get update of the source list failed"
    (cd "$srcdir" && apt-get "${opts[@]}" source --download-only libslirp >/dev/null 2>&1) ||
        die "apt-get source libslirp failed"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$(ls "$srcdir"/libslirp_*.orig.tar.* | head -1)" -C "$work"
src=$(ls -d "$work"/*/src | head -1)
version=$(ls "$srcdir"/libslirp_*.orig.tar.* | head -1 | sed -E 's/.*libslirp_([0-9.]+)\.orig.*/\1/')
IFS=. read -r major minor micro <<< "$version"
sed -e "s/@SLIRP_MAJOR_VERSION@/$major/" -e "s/@SLIRP_MINOR_VERSION@/$minor/" \
    -e "s/@SLIRP_MICRO_VERSION@/$micro/" -e "s/@SLIRP_VERSION_STRING@/\"$version\"/" \
    "$src/libslirp-version.h.in" > "$src/libslirp-version.h"
cflags=(-O2 -fPIC -ffunction-sections -fdata-sections '-DG_LOG_DOMAIN="Slirp"' -I"$src"
        -I"$dest/usr/include/glib-2.0" -I"$lib/glib-2.0/include")
objs=()
sources=("$src"/*.c)
echo "arm64-slirp: compiling libslirp $version for arm64 (${#sources[@]} files)"
for c in "${sources[@]}"; do
    o=$work/$(basename "${c%.c}").o
    "$CC" "${cflags[@]}" -c "$c" -o "$o" || die "compiling $(basename "$c") failed"
    objs+=("$o")
done
ar rcs "$lib/libslirp.a.tmp" "${objs[@]}"
mv "$lib/libslirp.a.tmp" "$lib/libslirp.a"
mkdir -p "$dest/usr/include/slirp"
cp "$src/libslirp.h" "$src/libslirp-version.h" "$dest/usr/include/slirp/"
