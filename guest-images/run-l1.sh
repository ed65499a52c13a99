#!/bin/bash
# Boot the L1 guest and run one test script inside it; exit with that script's exit status.
#
#   guest-images/run-l1.sh TEST_SCRIPT [kernel args...]
#
# L1 is arm64 under QEMU TCG: EL2 (so /dev/kvm exists inside), GICv3 + ITS, SMMUv3, an emulated
# NVMe disk (for VFIO) and a 9p share (guest-images/share/, tag "rig", mounted at /mnt in L1).
# Before the boot the share receives:
#   test.sh        the TEST_SCRIPT (run by L1's init as PID 1's child, cwd /tmp)
#   rig/, bench/   copies of tests/rig/ and tests/bench/ (lib.sh: . /mnt/rig/lib.sh); the C
#                  helpers tests/rig/tools/*.c built for arm64 next to their source
#   bin/lkvm       the VMM under test, copied from $LKVM_BIN if that exists (default:
#                  build/arm64/lkvm in the repository); removed from the share otherwise
#   results/       kept; L1 scripts may leave files there
# Extra arguments are appended to L1's kernel command line; k=v pairs become environment
# variables of the test script.
#
# The serial console streams to stdout and to guest-images/out/l1-<name>.log; host-side times of
# the RIG-L1 markers go to out/l1-<name>.markers. The exit status is N from the
# "RIG-L1-SCRIPT-END rc=N" line, 124 after a timeout, 125 if L1 ended without reaching that line.
#
# Environment: RIG_TIMEOUT (seconds, default 900), L1_SMP (2), L1_MEM (4G), NVME_IMG
# (out/nvme.img), NVME_MB (256), NVME_OPTS (appended to -device nvme, e.g. ",msix-exclusive-bar=on"),
# LKVM_BIN, QEMU (qemu-system-aarch64), INTERACTIVE=1 (console attached, shell after the script).
set -euo pipefail

RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG/.." && pwd)
OUT=$RIG/out
SHARE=$RIG/share
die() { printf 'run-l1: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 TEST_SCRIPT [kernel args...]"
TEST=$1; shift
[ -f "$TEST" ] || die "no such test script: $TEST"
QEMU=${QEMU:-qemu-system-aarch64}
command -v "$QEMU" >/dev/null || die "$QEMU not found; run guest-images/setup-host.sh (as root)"
for f in Image initrd-l1.cpio; do
  [ -f "$OUT/$f" ] || die "$OUT/$f missing; run guest-images/build.sh first"
done
RIG_TIMEOUT=${RIG_TIMEOUT:-900}
NAME=$(basename "$TEST"); NAME=${NAME%.sh}
LOG=$OUT/l1-$NAME.log
MARKERS=$OUT/l1-$NAME.markers

# One L1 at a time: they share the 9p directory, and two TCG guests on two cores help nobody.
exec 9>"$OUT/.run-l1.lock"
if ! flock -n 9; then
  echo "run-l1: another L1 is running; waiting for it" >&2
  flock -w "$RIG_TIMEOUT" 9 || die "gave up waiting for the other L1"
fi

# --- the share ---------------------------------------------------------------------------------
mkdir -p "$SHARE/bin" "$SHARE/results"
cp "$TEST" "$SHARE/test.sh.tmp" && mv "$SHARE/test.sh.tmp" "$SHARE/test.sh"
for d in rig bench; do
  rm -rf "$SHARE/$d"
  [ -d "$REPO/tests/$d" ] && cp -r "$REPO/tests/$d" "$SHARE/$d"
done
# Helper programs of the rig scripts (tests/rig/tools/*.c, e.g. pty-run), built static for L1,
# which has busybox and no compiler.
ARM64_CC=${ARM64_CC:-$( [ "$(uname -m)" = aarch64 ] && echo gcc || echo aarch64-linux-gnu-gcc )}
for c in "$SHARE"/rig/tools/*.c; do
  [ -e "$c" ] || continue
  "$ARM64_CC" -static -O2 -Wall -o "${c%.c}" "$c" || die "cannot build $c for L1 with $ARM64_CC"
done
LKVM_BIN=${LKVM_BIN:-build/arm64/lkvm}
case $LKVM_BIN in /*) ;; *) LKVM_BIN=$REPO/$LKVM_BIN ;; esac
if [ -f "$LKVM_BIN" ]; then
  # Stripped: the debug info stays on the host and L1 copies 2 MB instead of 17 MB out of 9p.
  strip_cmd=$(command -v aarch64-linux-gnu-strip || command -v strip)
  "$strip_cmd" -o "$SHARE/bin/lkvm.tmp" "$LKVM_BIN" 2>/dev/null || cp "$LKVM_BIN" "$SHARE/bin/lkvm.tmp"
  chmod 0755 "$SHARE/bin/lkvm.tmp" && mv "$SHARE/bin/lkvm.tmp" "$SHARE/bin/lkvm"
  echo "run-l1: lkvm under test: $LKVM_BIN"
else
  rm -f "$SHARE/bin/lkvm"
  echo "run-l1: no lkvm at $LKVM_BIN (tests that need it will fail)"
fi

# --- the NVMe backing file: non-sparse random data, made once -------------------------------------
NVME_IMG=${NVME_IMG:-$OUT/nvme.img}
if [ ! -f "$NVME_IMG" ]; then
  dd if=/dev/urandom of="$NVME_IMG.tmp" bs=1M count="${NVME_MB:-256}" status=none
  mv "$NVME_IMG.tmp" "$NVME_IMG"
fi

APPEND="console=ttyAMA0 rdinit=/init panic=-1 $*"
[ "${INTERACTIVE:-0}" = 1 ] && APPEND="$APPEND rigshell=1"
CMD=("$QEMU"
  -M virt,virtualization=on,gic-version=3,iommu=smmuv3
  -cpu max,pauth-impdef=on -smp "${L1_SMP:-2}" -m "${L1_MEM:-4G}" -accel tcg,thread=multi
  -kernel "$OUT/Image" -initrd "$OUT/initrd-l1.cpio" -append "$APPEND"
  -nodefaults -display none -no-reboot
  -drive "file=$NVME_IMG,if=none,id=nvm,format=raw,cache=none,aio=threads"
  -device "nvme,serial=rignvme0,drive=nvm${NVME_OPTS:-}"
  -fsdev "local,id=rig,path=$SHARE,security_model=none"
  -device virtio-9p-pci,fsdev=rig,mount_tag=rig)

if [ "${INTERACTIVE:-0}" = 1 ]; then
  echo "run-l1: interactive; Ctrl-A X quits QEMU"
  exec "${CMD[@]}" -serial mon:stdio
fi

echo "run-l1: $NAME: booting L1 (timeout ${RIG_TIMEOUT}s)"
start=$EPOCHREALTIME
: >"$LOG"; : >"$MARKERS"
FIFO=$(mktemp -u "$OUT/.l1-console.XXXXXX")
mkfifo "$FIFO"
"${CMD[@]}" -serial stdio </dev/null >"$FIFO" 2>&1 &
qpid=$!
# Whatever happens to this script (Ctrl-C, kill, an error), QEMU goes with it.
trap 'kill "$qpid" 2>/dev/null || true; rm -f "$FIFO"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Watchdog: ends by itself when QEMU does.
(
  deadline=$((SECONDS + RIG_TIMEOUT))
  while kill -0 "$qpid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo timeout >"$FIFO.timeout"
      kill "$qpid" 2>/dev/null; sleep 5; kill -9 "$qpid" 2>/dev/null
      break
    fi
    sleep 1
  done
) &
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%$'\r'}
  printf '%s\n' "$line"
  printf '%s\n' "$line" >>"$LOG"
  case $line in
    RIG-L1-*) printf '%.2f %s\n' "$(bc <<<"${EPOCHREALTIME} - $start")" "$line" >>"$MARKERS" ;;
  esac
done <"$FIFO"
set +e
wait "$qpid"; qemu_rc=$?
set -e
timed_out=0
[ -f "$FIFO.timeout" ] && timed_out=1
rm -f "$FIFO.timeout"
elapsed=$(bc <<<"scale=1; (${EPOCHREALTIME} - $start) / 1")

rc=$(sed -n 's/^RIG-L1-SCRIPT-END rc=\([0-9]*\).*/\1/p' "$LOG" | tail -n 1)
if [ -z "$rc" ]; then
  if [ "$timed_out" = 1 ]; then
    echo "run-l1: $NAME: TIMEOUT after ${RIG_TIMEOUT}s; L1 killed (log: $LOG)"
    rc=124
  else
    echo "run-l1: $NAME: L1 ended (qemu status $qemu_rc) without reaching the end of the script (log: $LOG)"
    rc=125
  fi
fi
boot=$(awk '$2 == "RIG-L1-USERSPACE" { print $1; exit }' "$MARKERS")
echo "run-l1: $NAME: script rc=$rc; L1 userspace after ${boot:-?}s, total ${elapsed}s (log: $LOG)"
exit "$rc"
