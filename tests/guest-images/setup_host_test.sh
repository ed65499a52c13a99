#!/bin/bash
# guest-images/setup-host.sh's package decisions (what a new host is missing, what apt-get is
# asked), run against a fake dpkg/apt on PATH:
# no real package database or apt is touched, so it runs anywhere, as any user. Each case gives
# the fake dpkg database, runs the script and checks what it said and what it asked apt-get.
#   tests/guest-images/setup_host_test.sh     (prints "setup-host-test: N passed, N failed")
set -uo pipefail
cd "$(dirname "$0")/../.."
script=$PWD/guest-images/setup-host.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

mkdir -p "$work/bin" "$work/apt/sources.list.d"
# bookworm-backports already configured: the cases are about packages only.
printf 'Types: deb\nURIs: file:/nowhere\nSuites: bookworm-backports\nComponents: main\n' \
    >"$work/apt/sources.list.d/test.sources"

cat >"$work/bin/id" <<'FAKE'
#!/bin/sh
echo 0
FAKE
cat >"$work/bin/dpkg" <<'FAKE'
#!/bin/bash
case $1 in
  --print-architecture) echo amd64 ;;
  --print-foreign-architectures) echo arm64 ;;
  --compare-versions) exit 0 ;;
  *) exit 2 ;;
esac
FAKE
# The database: one "package|architecture|status|version" line per installed instance.
cat >"$work/bin/dpkg-query" <<'FAKE'
#!/bin/bash
[ "$1" = -W ] || exit 2
format=${2#-f=}
name=${3%%:*}
want_arch=
[ "$3" != "$name" ] && want_arch=${3#*:}
found=1
while IFS='|' read -r p a st v; do
  [ "$p" = "$name" ] || continue
  [ -z "$want_arch" ] || [ "$a" = "$want_arch" ] || continue
  out=${format//'${db:Status-Abbrev}'/$st}
  out=${out//'${Architecture}'/$a}
  out=${out//'${Version}'/$v}
  printf '%b' "$out"
  found=0
done <"$FAKE_DPKG_DB"
exit $found
FAKE
cat >"$work/bin/apt-get" <<'FAKE'
#!/bin/bash
echo "apt-get $*" >>"$FAKE_APT_LOG"
FAKE
cat >"$work/bin/qemu-system-aarch64" <<'FAKE'
#!/bin/sh
echo "QEMU emulator version 10.0.0"
FAKE
chmod +x "$work/bin/"*

# Every package the script wants, installed natively (arch "all" where Debian ships it so).
write_db() {  # write_db [EXCLUDED_PACKAGE...]: the full set minus the excluded
  local p
  : >"$work/db"
  for p in g++ make pkg-config libfdt-dev libslirp-dev device-tree-compiler clang libclang-rt-14-dev clang-format man-db \
      groff-base kmod cpio bc file \
      xz-utils binutils; do
    [[ " $* " == *" $p "* ]] || echo "$p|amd64|ii |1" >>"$work/db"
  done
  for p in libcli11-dev doctest-dev crossbuild-essential-arm64; do
    [[ " $* " == *" $p "* ]] || echo "$p|all|ii |1" >>"$work/db"
  done
  echo "qemu-system-arm|amd64|ii |1:10.0.2" >>"$work/db"
}

run_case() {  # run_case NAME: runs the script; its output in $work/out, apt calls in $work/apt.log
  : >"$work/apt.log"
  PATH="$work/bin:$PATH" APT_ETC="$work/apt" FAKE_DPKG_DB="$work/db" FAKE_APT_LOG="$work/apt.log" \
      bash "$script" >"$work/out" 2>&1
  echo $? >"$work/rc"
}
expect() {  # expect NAME CONDITION-DESCRIPTION COMMAND...
  local name=$1 what=$2
  shift 2
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "setup-host-test: FAIL: $name: $what"
    sed 's/^/    | /' "$work/out"
    sed 's/^/    apt: /' "$work/apt.log"
  fi
}
out_has() { grep -qF -- "$1" "$work/out"; }
apt_has() { grep -qE -- "$1" "$work/apt.log"; }
rc_is() { [ "$(cat "$work/rc")" = "$1" ]; }

# 1. Everything native present: nothing to do, apt untouched.
write_db
run_case all-native
expect all-native "reports nothing to do" out_has "all packages present"
expect all-native "exits 0" rc_is 0
expect all-native "does not call apt-get" test ! -s "$work/apt.log"

# 2. libfdt-dev only as arm64 (a cross-builder's machine): not "present"; the arm64 one is
# replaced by the native one, and the script says so.
write_db libfdt-dev
echo "libfdt-dev|arm64|ii |1" >>"$work/db"
run_case arm64-libfdt
expect arm64-libfdt "does not claim all packages present" bash -c "! grep -q 'all packages present' '$work/out'"
expect arm64-libfdt "says it replaces libfdt-dev:arm64" out_has "replacing libfdt-dev:arm64 with the native package"
expect arm64-libfdt "removes libfdt-dev:arm64 explicitly" apt_has "^apt-get .* remove libfdt-dev:arm64$"
expect arm64-libfdt "installs the native libfdt-dev" apt_has "^apt-get .*--no-remove install libfdt-dev$"
expect arm64-libfdt "exits 0" rc_is 0

# 3. A package missing altogether: installed, nothing removed.
write_db bc
run_case missing
expect missing "installs bc" apt_has "^apt-get .*--no-remove install bc$"
expect missing "removes nothing" bash -c "! grep -q ' remove ' '$work/apt.log'"
expect missing "names the architecture" out_has "installing (amd64): bc"

# 4. Both instances present cannot happen for libfdt-dev, but for a Multi-Arch: same package it
# does: the native one counts, the foreign one is left alone.
write_db
echo "libfdt-dev|arm64|ii |1" >>"$work/db"
run_case both
expect both "native instance is enough" out_has "all packages present"

echo "setup-host-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
