# Runs in L1. `lkvm sandbox -- CMD` runs CMD in an L2 guest booted with lkvm's own init (L1's / is
# the guest's read-only root: L1's busybox sh and cat run in L2): CMD's exit status is lkvm's, its
# stdout is lkvm's stdout byte for byte, its stderr lkvm's stderr, writes into --workdir land in
# L1, the root is read-only, a missing CMD is 127, no `--` is one line and 125, and
# a kernel panic is 125; CMD cannot reach the status channel (the control tag cannot be mounted
# again, /proc/1/root shows no share) and a status it tries to fake early never beats a signal:
# SIGTERM is 143, SIGINT 130; with no -k, L1's own /boot kernel and initrd boot it (exit 3); a guest
# booted with `lkvm run --rootfs DIR` (DIR: the L2 initrd unpacked in L1) reaches userspace from the
# 9p root. Nine L2 boots (~15 s each in the rig).
. /mnt/rig/lib.sh

rig_need_lkvm
SB_TIMEOUT=${L2_TIMEOUT:-300}
K="-k $L2_KERNEL -i $L2_INITRD"
WORK=/tmp/sbwork
rm -rf "$WORK"
mkdir -p "$WORK"

# sb_run TAG ARGS... : lkvm sandbox $K ARGS with stdout in /tmp/sb-TAG.out and stderr in /tmp/sb-TAG.err
# (kept in /mnt/results); sets SB_RC (124 after a timeout) and SB_S (seconds).
sb_run() {
  _tag=$1; shift
  SB_OUT=/tmp/sb-$_tag.out SB_ERR=/tmp/sb-$_tag.err
  rig_log "[$_tag] lkvm sandbox $*"
  _t0=$(rig_now)
  rig_capture "$SB_TIMEOUT" "$SB_ERR" sh -c 'out=$1; shift; exec "$@" >"$out"' sh "$SB_OUT" "$LKVM" sandbox $K "$@"
  SB_RC=$?
  SB_S=$(awk -v a="$_t0" -v b="$(rig_now)" 'BEGIN { printf "%.1f", b - a }')
  sed "s/^/  $_tag err| /" "$SB_ERR" | head -n 40
  sed "s/^/  $_tag out| /" "$SB_OUT" | head -n 10
  [ -d "$RIG_RESULTS" ] && cp "$SB_OUT" "$SB_ERR" "$RIG_RESULTS/" 2>/dev/null
  echo "RIG-RESULT tag=sandbox-$_tag rc=$SB_RC total_s=$SB_S"
}
sb_expect_rc() {  # NAME WANT
  if [ "$SB_RC" = "$2" ]; then rig_pass "$1" "lkvm exit status $SB_RC after ${SB_S}s"
  else rig_fail "$1" "lkvm exit status $SB_RC, wanted $2 (stderr: $(tr -d '\r' <"$SB_ERR" | grep . | tail -n 2 | tr '\n' ' ' | cut -c1-200))"; fi
}

# --- 0. no `--`: one line, status 125, no guest --------------------------------------------------------
rig_capture 20 /tmp/sb-cli.out "$LKVM" sandbox $K --workdir "$WORK"; rc=$?
lines=$(grep -c . /tmp/sb-cli.out)
first=$(head -n 1 /tmp/sb-cli.out | cut -c1-160)
if [ "$rc" = 125 ] && [ "$lines" = 1 ] && grep -q -- "'--'" /tmp/sb-cli.out; then rig_pass sandbox/no-dashdash "rc=$rc: $first"
else rig_fail sandbox/no-dashdash "rc=$rc, $lines lines: $first"; fi

# --- 1. exit status, stderr, a write into the workdir, read-only root, cwd -------------------------------
rm -f /sandbox-ro-probe
sb_run status --workdir "$WORK" -- sh -c \
  'echo sandbox-stderr-line >&2; echo written-in-guest >from-guest.txt; touch /sandbox-ro-probe 2>/dev/null && echo ROOT-WRITABLE >&2; pwd; exit 7'
sb_expect_rc sandbox/exit-7 7
check_eq sandbox/stdout-pwd "$(cat "$SB_OUT")" "$WORK"
if grep -q '^sandbox-stderr-line$' "$SB_ERR" && ! grep -q sandbox-stderr-line "$SB_OUT"; then
  rig_pass sandbox/stderr "CMD's stderr on lkvm's stderr only"
else rig_fail sandbox/stderr "stderr line missing from lkvm's stderr or leaked into stdout"; fi
if grep -q 'Power down' "$SB_ERR"; then rig_fail sandbox/stderr-quiet "the kernel's power-off line reached stderr"
else rig_pass sandbox/stderr-quiet "$(grep -c . "$SB_ERR") line(s) on stderr, no power-off message"; fi
check_eq sandbox/workdir-write "$(cat "$WORK/from-guest.txt" 2>/dev/null)" written-in-guest
if [ "$SB_RC" != 7 ]; then rig_fail sandbox/root-ro "CMD did not run to its end (status $SB_RC)"
elif [ -e /sandbox-ro-probe ] || grep -q ROOT-WRITABLE "$SB_ERR"; then rig_fail sandbox/root-ro "the guest wrote into L1's /"
else rig_pass sandbox/root-ro "touch / refused in the guest, nothing in L1's /"; fi
if ls -d /tmp/lkvm-sandbox-* >/dev/null 2>&1; then rig_fail sandbox/cleanup "left behind: $(ls -d /tmp/lkvm-sandbox-*)"
else rig_pass sandbox/cleanup "no /tmp/lkvm-sandbox-* left"; fi

# --- 2. `cat FILE` prints the file byte for byte -------------------------------------------------------
# Binary, with \n, \r\n and NUL bytes: any tty translation would show.
{ printf 'line1\nline2\r\nnul\0byte\n'; dd if=/dev/urandom bs=1k count=256 2>/dev/null; } >"$WORK/data.bin"
sb_run cat --workdir "$WORK" -- cat data.bin
sb_expect_rc sandbox/cat-exit 0
want=$(file_sha "$WORK/data.bin")
got=$(file_sha "$SB_OUT")
if [ "$want" = "$got" ]; then rig_pass sandbox/cat-bytes "$(wc -c <"$SB_OUT") bytes, sha256=$got"
else rig_fail sandbox/cat-bytes "stdout $(wc -c <"$SB_OUT") bytes sha256=$got, file $(wc -c <"$WORK/data.bin") bytes sha256=$want"; fi

# --- 2b. a --workdir on another file system, beneath its mount point ------------------------------------
# The host root share does not cross into other file systems, so the guest must make room for the
# path itself (a tmpfs on the sealed mount point) before it mounts the workdir there.
OTHER=/mnt/sb-otherfs
mkdir -p "$OTHER" && mount -t tmpfs -o size=8m sb-otherfs "$OTHER" && mkdir -p "$OTHER/deep/work"
sb_run otherfs --workdir "$OTHER/deep/work" -- sh -c 'pwd; echo from-other-fs >written.txt; ls /mnt/sb-otherfs'
sb_expect_rc sandbox/workdir-other-fs 0
if [ "$(head -n 1 "$SB_OUT")" = "$OTHER/deep/work" ] &&
   [ "$(cat "$OTHER/deep/work/written.txt" 2>/dev/null)" = from-other-fs ]; then
  rig_pass sandbox/workdir-other-fs-write "cwd $OTHER/deep/work, the write reached L1's tmpfs"
else rig_fail sandbox/workdir-other-fs-write "stdout: $(tr '\n' ' ' <"$SB_OUT" | cut -c1-120)"; fi
umount "$OTHER" 2>/dev/null

# --- 3. a missing CMD: 127 ------------------------------------------------------------------------------
sb_run missing --workdir "$WORK" -- no-such-command-here arg
sb_expect_rc sandbox/not-found-127 127
if grep -q 'no-such-command-here' "$SB_ERR"; then rig_pass sandbox/not-found-message "$(grep -m1 no-such-command-here "$SB_ERR" | tr -d '\r')"
else rig_fail sandbox/not-found-message "no message naming the command on stderr"; fi

# --- 4. a guest crash: 125 ------------------------------------------------------------------------------
sb_run crash --workdir "$WORK" -- sh -c 'echo c >/proc/sysrq-trigger; sleep 5'
sb_expect_rc sandbox/crash-125 125
if grep -q 'the guest reset' "$SB_ERR"; then rig_pass sandbox/crash-message "$(grep -m1 'the guest reset' "$SB_ERR" | tr -d '\r')"
else rig_fail sandbox/crash-message "no 'the guest reset' line on stderr"; fi

# --- 4b. CMD fakes status 0 early, then lkvm is stopped by a signal: the signal's status wins -------------
# CMD (root in the guest) tries both ways to the status channel: mounting the control tag again,
# and the init's root through the guest's /proc (where the share stayed mounted before the fix;
# now its mount point there is an empty directory of the initramfs).
FAKE='mkdir -p /tmp/ctl
if mount -t 9p -o trans=virtio,version=9p2000.L,access=0 lkvm-ctl /tmp/ctl 2>/dev/null; then
  echo CTL-MOUNTED >&2; echo 0 >/tmp/ctl/status && echo CTL-WRITTEN >&2
else echo CTL-MOUNT-REFUSED >&2; fi
if [ -e /proc/1/root/lkvm/ctl/command ]; then
  echo CTL-PROC-VISIBLE >&2; echo 0 2>/dev/null >/proc/1/root/lkvm/ctl/status && echo CTL-PROC-WRITTEN >&2
else echo CTL-PROC-HIDDEN >&2; fi
echo READY; exec sleep 600'
# sb_signal TAG SIGNAL : the sandbox above, stopped with SIGNAL once CMD printed READY; sets SB_RC
sb_signal() {
  SB_OUT=/tmp/sb-$1.out SB_ERR=/tmp/sb-$1.err
  rig_log "[$1] lkvm sandbox -- sh -c FAKE, then SIG$2"
  _t0=$(rig_now)
  setsid "$LKVM" sandbox $K --workdir "$WORK" -- sh -c "$FAKE" </dev/null >"$SB_OUT" 2>"$SB_ERR" &
  _sp=$!
  _n=0
  while ! grep -q READY "$SB_OUT" 2>/dev/null && rig_alive "$_sp" && [ $_n -lt $((SB_TIMEOUT * 5)) ]; do sleep 0.2; _n=$((_n + 1)); done
  kill -"$2" "$_sp" 2>/dev/null
  _n=0
  while rig_alive "$_sp" && [ $_n -lt 300 ]; do sleep 0.2; _n=$((_n + 1)); done
  rig_alive "$_sp" && rig_kill_group "$_sp"
  wait "$_sp"; SB_RC=$?
  SB_S=$(awk -v a="$_t0" -v b="$(rig_now)" 'BEGIN { printf "%.1f", b - a }')
  sed "s/^/  $1 err| /" "$SB_ERR" | head -n 20
  [ -d "$RIG_RESULTS" ] && cp "$SB_OUT" "$SB_ERR" "$RIG_RESULTS/" 2>/dev/null
  echo "RIG-RESULT tag=sandbox-$1 rc=$SB_RC"
}
sb_signal sigterm TERM
sb_expect_rc sandbox/fake-status-sigterm-143 143
if grep -q CTL-MOUNT-REFUSED "$SB_ERR" && grep -q CTL-PROC-HIDDEN "$SB_ERR"; then
  rig_pass sandbox/status-channel-unreachable "CMD could neither mount lkvm-ctl again nor reach it through /proc/1/root"
else rig_fail sandbox/status-channel-unreachable "$(grep -o 'CTL-[A-Z-]*' "$SB_ERR" | tr '\n' ' ')"; fi
sb_signal sigint INT
sb_expect_rc sandbox/fake-status-sigint-130 130
if ls -d /tmp/lkvm-sandbox-* >/dev/null 2>&1; then rig_fail sandbox/cleanup-after-signal "left behind: $(ls -d /tmp/lkvm-sandbox-*)"
else rig_pass sandbox/cleanup-after-signal "no /tmp/lkvm-sandbox-* left after SIGTERM and SIGINT"; fi

# --- 4c. no -k: L1's own kernel and initrd from /boot (the L2 Image is L1's kernel) -----------------------
REL=$(uname -r)
if [ -e "/boot/vmlinuz-$REL" ] || [ -e "/boot/initrd.img-$REL" ]; then
  rig_fail sandbox/no-boot-kernel "L1 already has /boot/*-$REL: cannot test the case without"
else
  rig_capture 20 /tmp/sb-nok.out "$LKVM" sandbox --workdir "$WORK" -- true; rc=$?
  if [ "$rc" = 125 ] && [ "$(grep -c . /tmp/sb-nok.out)" = 1 ] && grep -q -- '-k/--kernel' /tmp/sb-nok.out; then
    rig_pass sandbox/no-boot-kernel "rc=$rc: $(head -n 1 /tmp/sb-nok.out | cut -c1-160)"
  else rig_fail sandbox/no-boot-kernel "rc=$rc: $(head -n 2 /tmp/sb-nok.out | tr '\n' ' ' | cut -c1-200)"; fi
fi
mkdir -p /boot
cp "$L2_KERNEL" "/boot/vmlinuz-$REL" && cp "$L2_INITRD" "/boot/initrd.img-$REL"
K_SAVED=$K K=
sb_run default-kernel --workdir "$WORK" -- sh -c 'exit 3'
K=$K_SAVED
sb_expect_rc sandbox/default-kernel-exit-3 3
if grep -q "/boot/vmlinuz-$REL.*/boot/initrd.img-$REL" "$SB_ERR"; then rig_pass sandbox/default-kernel-line "$(grep -m1 /boot/vmlinuz "$SB_ERR" | tr -d '\r')"
else rig_fail sandbox/default-kernel-line "no line naming /boot/vmlinuz-$REL and its initrd on stderr"; fi
rm -f "/boot/vmlinuz-$REL" "/boot/initrd.img-$REL"

# --- 5. lkvm run --rootfs DIR: the guest's / is DIR over 9p ----------------------------------------------
ROOTFS=/tmp/sbrootfs
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
(cd "$ROOTFS" && cpio -id <"$L2_INITRD" 2>/dev/null)
marker=marker-$$-$(rig_now)
echo "$marker" >"$ROOTFS/rig-9proot-marker"
if [ -x "$ROOTFS/init" ]; then rig_pass sandbox/rootfs-unpacked "$(find "$ROOTFS" -type f | wc -l) files"
else rig_fail sandbox/rootfs-unpacked "no /init in the unpacked L2 initrd"; fi
run_l2 p9root "$LKVM" run $K -c 1 -m 256 --name p9root --rootfs "$ROOTFS" \
  -p "console=ttyS0 quiet panic=-1 root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw rigchecks=p9root"
l2_expect_boot p9root
l2_expect p9root p9root
l2_expect_rc p9root 0
l2_expect_text p9root marker "marker=$marker"
check_eq p9root/guest-write "$(cat "$ROOTFS/from-l2" 2>/dev/null)" written-by-l2

rm -rf "$WORK" "$ROOTFS"
rig_finish
