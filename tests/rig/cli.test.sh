# Runs in L1. lkvm run as a kvmtool user types it: the default kernel command line (root=/dev/vda
# with a disk, -p appended), the console on a real terminal (Ctrl-C reaches the guest, Ctrl-A x
# ends lkvm with status 0 and the terminal restored), -m 1G, the default user-mode NIC and
# -n none, and the one-line answers to kvmtool-only flags. The terminal is a pty driven by
# /mnt/rig/tools/pty-run (tests/rig/tools/pty-run.c; L1 has no `script`).
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-300}
PTY=/mnt/rig/tools/pty-run
K="-k $L2_KERNEL -i $L2_INITRD"
mkdisk /tmp/cli-disk.img 8 zero

# --- no guest: kvmtool-only flags, -d DIR, --version, stop --all -------------------------------------
cli_line() {  # cli_line NAME WANT-RC PATTERN CMD... : exit status WANT-RC, output matching PATTERN
  _n=$1 _want=$2 _pat=$3; shift 3
  rig_capture 20 /tmp/cli.out "$@"; _rc=$?
  _first=$(grep -m1 . /tmp/cli.out | cut -c1-160)
  if [ "$_rc" != "$_want" ]; then rig_fail "$_n" "exit status $_rc, wanted $_want: $_first"
  elif [ -n "$_pat" ] && ! grep -qE -- "$_pat" /tmp/cli.out; then rig_fail "$_n" "output does not match '$_pat': $_first"
  else rig_pass "$_n" "rc=$_rc: $_first"; fi
}
cli_line cli/kvmtool-balloon 2 '^lkvm: error: --balloon: lkvm does not have this kvmtool flag; .*-m' "$LKVM" run $K --balloon
cli_line cli/kvmtool-vsock 2 'does not have this kvmtool flag' "$LKVM" run $K --vsock 3
cli_line cli/disk-dir 2 "is a directory.*--rootfs /tmp.*--9p /tmp" "$LKVM" run $K -d /tmp
cli_line cli/disk-dir-ro 2 "is a directory.*--rootfs" "$LKVM" run $K -d /tmp,ro
cli_line cli/version 0 '^lkvm [0-9.]+ \(git [^)]+\)' "$LKVM" --version
cli_line cli/stop-all-none 0 '' "$LKVM" stop --all

# --- 1. no -p: the guest boots with lkvm's command line -----------------------------------------------
run_l2 cli-nop "$LKVM" run $K -d /tmp/cli-disk.img
l2_expect_boot cli-nop
l2_expect_text cli-nop start-line '# lkvm run -k '"$L2_KERNEL"' -i '"$L2_INITRD"' -m 256 -c 1 --name guest-'
l2_expect_text cli-nop guest-cmdline 'Kernel command line: console=ttyS0 earlycon root=/dev/vda rw'
l2_expect_rc cli-nop 0

# --- 2. on a terminal: -p appended, -m 1G, the default NIC, Ctrl-C to the guest, Ctrl-A h, Ctrl-A x ----
# The guest's shell (rigend=shell) runs on ttyS0. Markers are typed split ("GOT-SIG""INT") so that the
# echo of the typed line never matches what only the command's output may contain.
L2_LOG=/tmp/l2-cli-pty.log
rig_log "[cli-pty] $PTY ... -- $LKVM run $K -d /tmp/cli-disk.img -m 1G -p ..."
"$PTY" -t "$L2_TIMEOUT" \
  'expect:RIG-L2-END' 'expect:# ' \
  'send:echo "CMDLINE=[$(cat /proc/cmdline)]"\r' 'expect:CMDLINE=[console' 'expect:# ' \
  'send:( trap "echo GOT-SIG""INT; exit 0" INT; echo TRAP-""READY; while :; do sleep 1; done )\r' \
  'expect:TRAP-READY' 'send:\x03' 'expect:GOT-SIGINT' 'expect:# ' \
  'send:\x01h' 'expect:lkvm console keys' \
  'send:\x01x' \
  -- "$LKVM" run $K -d /tmp/cli-disk.img -m 1G --name cli-pty \
     -p "quiet panic=-1 rigchecks=mem,netdhcp rigmem=1024 rigend=shell" >"$L2_LOG" 2>&1
pty_rc=$?
tr -d '\r' <"$L2_LOG" | sed 's/^/  cli-pty| /'
[ -d "$RIG_RESULTS" ] && cp "$L2_LOG" "$RIG_RESULTS/" 2>/dev/null
L2_BOOT_S=x L2_TIMEDOUT=0 L2_RC=$(tr -d '\r' <"$L2_LOG" | sed -n 's/^PTY-EXIT status=//p')
check_eq cli-pty/steps "$pty_rc" 0
cmdline=$(tr -d '\r' <"$L2_LOG" | sed -n 's/^CMDLINE=\[\(console.*\)\]$/\1/p' | head -n 1)
case $cmdline in
  "console=ttyS0 earlycon root=/dev/vda rw quiet panic=-1 rigchecks="*) rig_pass cli-pty/cmdline-appended "$cmdline" ;;
  *) rig_fail cli-pty/cmdline-appended "guest /proc/cmdline '$cmdline'" ;;
esac
l2_expect cli-pty mem netdhcp
# The guest's tty echoes the Ctrl-C as "^C" in front of the trap's line.
if tr -d '\r' <"$L2_LOG" | grep -q 'GOT-SIGINT'; then rig_pass cli-pty/ctrl-c-to-guest "the guest's subshell trapped SIGINT; lkvm kept running"
else rig_fail cli-pty/ctrl-c-to-guest "no GOT-SIGINT from the guest"; fi
l2_expect_text cli-pty ctrl-a-h "Ctrl-A x        end lkvm"
check_eq cli-pty/ctrl-a-x-status "$L2_RC" 0
check_eq cli-pty/terminal-restored "$(tr -d '\r' <"$L2_LOG" | sed -n 's/^PTY-TERMIOS //p')" restored

# --- 3. -n none: no NIC ---------------------------------------------------------------------------------
run_l2 cli-nonet "$LKVM" run $K -n none -p "quiet panic=-1 rigchecks=netnone"
l2_expect cli-nonet netnone
l2_expect_rc cli-nonet 0

rm -f /tmp/cli-disk.img
rig_finish
