#!/bin/bash
# Host preparation for building lkvm and running the nested test rig.
#
#   sudo guest-images/setup-host.sh
#
# Debian 12 (bookworm), x86_64 or arm64, run as root. Idempotent: when every package is already
# installed it returns without touching apt. Otherwise it
#   * adds bookworm-backports (own deb822 file; the mirror is taken from this machine's apt config),
#   * on x86_64 adds the arm64 dpkg architecture (cross toolchain; build.sh downloads arm64 .debs),
#   * installs the build, test and rig packages, and QEMU 10 from bookworm-backports.
# On an arm64 host the cross toolchain and the host QEMU are skipped (RIG_HOST_QEMU=1 forces QEMU).
set -euo pipefail

say() { printf 'setup-host: %s\n' "$*"; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

APT_ETC=${APT_ETC:-/etc/apt}   # overridable only to test the source parsing and the package logic
BPO_FILE=$APT_ETC/sources.list.d/lkvm-rig-backports.sources
QEMU_MIN=1:10.0   # the rig needs QEMU >= 10 (bookworm itself ships 7.2)

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0)"
command -v dpkg >/dev/null && command -v apt-get >/dev/null || die "needs a Debian system (dpkg/apt-get)"
if [ -r /etc/os-release ]; then
  . /etc/os-release
  [ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: written for Debian 12 bookworm, this is '${VERSION_CODENAME:-unknown}'"
fi

ARCH=$(dpkg --print-architecture)
BUILD_PKGS=(g++ make pkg-config libfdt-dev libslirp-dev libcli11-dev doctest-dev device-tree-compiler clang libclang-rt-14-dev clang-format)
RIG_PKGS=(kmod cpio bc file xz-utils binutils)
CROSS_PKGS=()
WANT_QEMU=0
case $ARCH in
  # libfdt-dev:arm64 cannot be co-installed with the native libfdt-dev (not Multi-Arch: same);
  # the cross build extracts it into the cache instead (guest-images/arm64-libfdt.sh).
  amd64) CROSS_PKGS=(crossbuild-essential-arm64); WANT_QEMU=1 ;;
  arm64) [ "${RIG_HOST_QEMU:-0}" = 1 ] && WANT_QEMU=1 ;;
  *) die "unsupported host architecture '$ARCH' (amd64 and arm64 are supported)" ;;
esac

# Installed in the native architecture (or as an "all" package). With the arm64 dpkg architecture
# added, `dpkg-query -W libfdt-dev` also matches libfdt-dev:arm64 alone, which the native unit
# build cannot link (-lfdt), so every instance is listed with its architecture.
installed_arches() { dpkg-query -W -f='${db:Status-Abbrev}|${Architecture}\n' "$1" 2>/dev/null | sed -n 's/^ii |//p'; }
is_installed() { installed_arches "$1" | grep -qxE "$ARCH|all"; }
# The installed foreign instances of a package, as pkg:arch.
foreign_instances() { installed_arches "$1" | grep -vxE "$ARCH|all" | sed "s/^/$1:/"; }
qemu_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null) || return 1
  is_installed qemu-system-arm && dpkg --compare-versions "$v" ge "$QEMU_MIN"
}

missing=()
replaced=()   # foreign instances that block a native install (libfdt-dev:arm64 is not Multi-Arch: same)
for p in "${BUILD_PKGS[@]}" "${RIG_PKGS[@]}" "${CROSS_PKGS[@]}"; do
  is_installed "$p" && continue
  missing+=("$p")  # a plain name is the native architecture's package for apt-get
  while read -r f; do [ -n "$f" ] && replaced+=("$f"); done < <(foreign_instances "$p")
done
need_qemu=0
[ "$WANT_QEMU" = 1 ] && ! qemu_ok && need_qemu=1
need_arch=0
[ "$ARCH" = amd64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64 && need_arch=1
# build.sh downloads the arm64 kernel from bookworm-backports, so the suite must be known even when
# every package is installed already.
have_bpo() {
  grep -qsE '^[^#]*bookworm-backports' "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list \
    "$APT_ETC"/sources.list.d/*.sources 2>/dev/null
}

if [ ${#missing[@]} -eq 0 ] && [ "$need_qemu" = 0 ] && [ "$need_arch" = 0 ] && have_bpo; then
  say "all packages present, nothing to do"
  [ "$WANT_QEMU" = 1 ] && say "$(qemu-system-aarch64 --version | head -1)"
  exit 0
fi

# --- bookworm-backports -----------------------------------------------------------------------
# Find the URI that serves the 'bookworm' suite with the 'main' component in the existing apt
# configuration: deb822 stanzas (*.sources) and one-line entries (sources.list, *.list).
find_mirror() {
  local f
  for f in "$APT_ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Stanzas are separated by blank lines; field names are case-insensitive; comments start with #.
    awk '
      function flush() {
        if (uris != "" && enabled != "no" && types ~ /(^| )deb( |$)/ &&
            (" " suites " ") ~ / bookworm / && (" " comps " ") ~ / main /) {
          n = split(uris, u, " "); for (i = 1; i <= n; i++) if (u[i] ~ /^(https?|file):/) { print u[i]; found = 1; exit }
        }
        uris = types = suites = comps = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val; else if (key == "uris") uris = val
        else if (key == "suites") suites = val; else if (key == "components") comps = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }' "$f"
  done
  for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI suite component...
    awk '
      /^[ \t]*deb[ \t]/ {
        line = $0; sub(/#.*/, "", line); gsub(/\[[^]]*\]/, "", line)
        n = split(line, w, /[ \t]+/); j = 0
        for (i = 1; i <= n; i++) if (w[i] != "") a[++j] = w[i]
        if (a[3] != "bookworm") next
        for (i = 4; i <= j; i++) if (a[i] == "main") { print a[2]; exit }
      }' "$f"
  done
}

if have_bpo; then
  say "bookworm-backports already configured"
else
  mirror=$(find_mirror | head -1)
  [ -n "$mirror" ] || die "no apt source for suite 'bookworm' (component main) found in /etc/apt; add one, or add bookworm-backports by hand"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "# Added by lkvm guest-images/setup-host.sh (same mirror as the bookworm entry)."
    echo "Types: deb"
    echo "URIs: $mirror"
    echo "Suites: bookworm-backports"
    echo "Components: main"
    [ -f "$keyring" ] && echo "Signed-By: $keyring"
  } > "$BPO_FILE.tmp"
  mv "$BPO_FILE.tmp" "$BPO_FILE"
  say "added bookworm-backports ($BPO_FILE)"
fi

if [ "$ARCH" = amd64 ] && [ "$need_arch" = 1 ]; then
  dpkg --add-architecture arm64
  say "added dpkg architecture arm64"
fi

export DEBIAN_FRONTEND=noninteractive
# --no-remove: never let an install take away something already installed (abort instead).
APT_BASE=(apt-get -y -q -o Dpkg::Use-Pty=0 -o APT::Install-Recommends=false)
APT=("${APT_BASE[@]}" --no-remove)
log=$(mktemp /tmp/lkvm-setup-host.XXXXXX.log)
run_apt() {
  if ! "${APT[@]}" "$@" >>"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "apt-get $* failed (full log: $log)"
  fi
}
# The same for the one step that is meant to remove packages (the ones it names).
run_apt_removing() {
  if ! "${APT_BASE[@]}" "$@" >>"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "apt-get $* failed (full log: $log)"
  fi
}
say "apt-get update"
run_apt update
if [ ${#replaced[@]} -gt 0 ]; then
  # The cross build does not need them installed: it extracts its arm64 libraries into the cache
  # (guest-images/arm64-libfdt.sh). Removed explicitly, so --no-remove below still guards the rest.
  say "replacing ${replaced[*]} with the native package (they cannot be installed side by side)"
  run_apt_removing remove "${replaced[@]}"
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ($ARCH): ${missing[*]}"
  run_apt install "${missing[@]}"
fi
if [ "$need_qemu" = 1 ]; then
  say "installing qemu-system-arm from bookworm-backports"
  run_apt install -t bookworm-backports qemu-system-arm
  qemu_ok || die "qemu-system-arm >= $QEMU_MIN did not get installed (see $log)"
fi
rm -f "$log"
[ "$WANT_QEMU" = 1 ] && say "$(qemu-system-aarch64 --version | head -1)"
say "done"
