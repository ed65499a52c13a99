#!/bin/bash
# Provides libfdt for the arm64 cross build without installing libfdt-dev:arm64, which Debian 12
# cannot co-install with the native libfdt-dev the unit tests link against (the package is not
# Multi-Arch: same). Downloads the arm64 .deb once into the cache and extracts it.
# usage: arm64-libfdt.sh DEST    (DEST/usr/lib/aarch64-linux-gnu/libfdt.a appears)
set -euo pipefail
dest=${1:?usage: arm64-libfdt.sh DEST}
[ -f "$dest/usr/lib/aarch64-linux-gnu/libfdt.a" ] && exit 0
cache=${LKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig}/debs
mkdir -p "$cache" "$dest"
cd "$cache"
if ! ls libfdt-dev_*_arm64.deb >/dev/null 2>&1; then
    dpkg --print-foreign-architectures | grep -qx arm64 || {
        echo "arm64-libfdt: the arm64 dpkg architecture is not enabled; run guest-images/setup-host.sh as root" >&2
        exit 1
    }
    apt-get download libfdt-dev:arm64 >/dev/null
fi
dpkg-deb -x "$(ls libfdt-dev_*_arm64.deb | head -1)" "$dest"
[ -f "$dest/usr/lib/aarch64-linux-gnu/libfdt.a" ] || { echo "arm64-libfdt: no libfdt.a in the package" >&2; exit 1; }
