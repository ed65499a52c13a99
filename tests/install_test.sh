#!/bin/bash
# `make install DESTDIR=...` installs lkvm, its man page and its bash completion, the man page
# renders without a warning, and `make uninstall` removes all three. (That the man page names
# every flag of every command's --help is the unit test "vmm/lkvm.1 names every flag ...".)
# Needs the arm64 build (make lkvm); run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "install_test: PASS $*"; }
bad() { echo "install_test: FAIL $*"; fails=$((fails + 1)); }

prefix=/usr/local
if make -s BUILD="$BUILD" install DESTDIR="$tmp" PREFIX="$prefix" >"$tmp.log" 2>&1; then ok "make install"
else bad "make install: $(tail -n 3 "$tmp.log")"; fi
rm -f "$tmp.log"
root=$tmp$prefix
[ -x "$root/bin/lkvm" ] && ok "bin/lkvm" || bad "bin/lkvm missing or not executable"
[ -f "$root/share/man/man1/lkvm.1" ] && ok "man1/lkvm.1" || bad "share/man/man1/lkvm.1 missing"
[ -f "$root/share/bash-completion/completions/lkvm" ] && ok "completion" || bad "bash completion missing"
bash -n "$root/share/bash-completion/completions/lkvm" 2>/dev/null && ok "completion parses" || bad "completion: bash -n fails"
if command -v man >/dev/null; then
    warnings=$(MANWIDTH=80 man -l "$root/share/man/man1/lkvm.1" 2>&1 >/dev/null | grep -c warning)
    [ "$warnings" -eq 0 ] && ok "man -l: no warnings" || bad "man -l lkvm.1: $warnings warnings"
    MANWIDTH=80 man -l "$root/share/man/man1/lkvm.1" 2>/dev/null | grep -q "CONSOLE KEYS" && ok "man renders" ||
        bad "man -l lkvm.1 renders no CONSOLE KEYS section"
else
    bad "man is not installed (guest-images/setup-host.sh installs man-db)"
fi
make -s BUILD="$BUILD" uninstall DESTDIR="$tmp" PREFIX="$prefix" >/dev/null 2>&1
left=$(find "$tmp" -type f | wc -l)
[ "$left" -eq 0 ] && ok "make uninstall" || bad "make uninstall left $left files"
echo "install_test: $fails failed"
[ "$fails" -eq 0 ]
