# Runs in L1. The control channel (vmm/control/): `lkvm list`, `lkvm stat`, `lkvm debug` and `lkvm stop`
# against running L2 guests, over the per-user socket directory.
#   1. A guest with a vIOMMU and a disk keeps doing DMA (L2 check dmaloop) while L1 watches it:
#      list shows it, stat twice shows maps/unmaps rising, an injected fault reaches the guest's
#      kernel log, a forced failed disk request does not stop it, and it powers off normally.
#   2. Names: a live name is refused, a stale socket (VM killed with SIGKILL) is removed by
#      `lkvm list` and replaced by the next VM of that name, whose socket outlives a guest reboot;
#      `lkvm stop` ends a guest in order (exit 0), SIGTERM too (exit 143), both remove the socket.
#   3. After every exit: no socket file, no process, `lkvm list` empty, `lkvm stat` a clear error.
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-240}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -n none"  # -n none: no default user-mode NIC in the device sets counted here
if [ -n "${XDG_RUNTIME_DIR:-}" ]; then CTL_DIR=$XDG_RUNTIME_DIR/lkvm; else CTL_DIR=$HOME/.lkvm; fi
VM=rig-ctl
DMA_SECS=45

# ctl CMD... : run a control command (10 s at most); output in /tmp/ctl.out, status returned
ctl() { rig_capture 10 /tmp/ctl.out "$LKVM" "$@"; }
# wait_file PATH SECS : until PATH exists
wait_file() {
  _w=0
  while [ ! -e "$1" ] && [ $_w -lt $(($2 * 10)) ]; do sleep 0.1; _w=$((_w + 1)); done
  [ -e "$1" ]
}
# wait_log FILE TEXT SECS : until FILE contains TEXT
wait_log() {
  _w=0
  while ! grep -qF -- "$2" "$1" 2>/dev/null && [ $_w -lt $(($3 * 10)) ]; do sleep 0.1; _w=$((_w + 1)); done
  grep -qF -- "$2" "$1" 2>/dev/null
}
# stat_field TEXT-FILE LINE-PREFIX KEY : KEY=value from the first line starting with LINE-PREFIX
stat_field() { sed -n "s/^$2 .*[ ]$3=\([^ ]*\).*/\1/p" "$1" | head -n 1; }

# --- 0. errors before anything runs ----------------------------------------------------------------
rig_cli_error ctl/stat-unknown "no VM named 'nosuchvm'.*lkvm list" "$LKVM" stat nosuchvm
rig_cli_error ctl/stop-unknown "no VM named" "$LKVM" stop nosuchvm
rig_cli_error ctl/bad-name "not a VM name" "$LKVM" stat 'bad/name'
rig_cli_error ctl/no-name "name" "$LKVM" stat
if ctl list && [ "$(grep -vc '^NAME' /tmp/ctl.out)" = 0 ]; then rig_pass ctl/list-empty "no VM listed before any runs"
else rig_fail ctl/list-empty "rc=$? output: $(head -n 3 /tmp/ctl.out | tr '\n' '|')"; fi

# --- 1. a guest doing DMA behind the vIOMMU, watched from L1 -----------------------------------------
mkdisk /tmp/ctl-disk.img 16 zero
rm -f /tmp/ctl-main.rc
( run_l2 ctl-main "$LKVM" run $K -c 1 -m 256 --name "$VM" --console serial --viommu virtio -d /tmp/ctl-disk.img --rng \
    -p "$A rigchecks=dmaloop,viommufault,ioerror rigdmasecs=$DMA_SECS"
  echo "$L2_RC $L2_TIMEDOUT ${L2_BOOT_S:-none} $L2_TOTAL_S" >/tmp/ctl-main.rc ) &
main_job=$!

if wait_log /tmp/l2-ctl-main.log RIG-L2-DMALOOP-START 180; then
  rig_pass ctl/guest-busy "L2 is doing DMA"
  sock=$CTL_DIR/$VM.sock
  if [ -S "$sock" ]; then
    perms=$(stat -c '%a uid=%u' "$sock"); dperms=$(stat -c '%a uid=%u' "$CTL_DIR")
    if [ "$perms" = "600 uid=$(id -u)" ] && [ "$dperms" = "700 uid=$(id -u)" ]; then rig_pass ctl/socket-perms "$sock $perms, $CTL_DIR $dperms"
    else rig_fail ctl/socket-perms "$sock $perms, $CTL_DIR $dperms (want 600 and 700, uid $(id -u))"; fi
  else rig_fail ctl/socket-perms "no socket at $sock"; fi

  ctl list; cp /tmp/ctl.out /tmp/ctl-list.out
  pid=$(awk -v n="$VM" '$1 == n { print $2 }' /tmp/ctl-list.out)
  state=$(awk -v n="$VM" '$1 == n { print $3 }' /tmp/ctl-list.out)
  if [ -n "$pid" ] && [ "$state" = running ] && kill -0 "$pid" 2>/dev/null; then rig_pass ctl/list "$VM pid=$pid $state"
  else rig_fail ctl/list "$(tr '\n' '|' </tmp/ctl-list.out)"; fi
  if [ -n "$pid" ]; then  # the control channel adds no thread: vCPUs + the event loop
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
    check_eq ctl/threads "${threads:-none}" 2
  fi

  rig_cli_error ctl/name-taken "already running" "$LKVM" run $K -c 1 -m 128 --name "$VM" -p "$A"

  # stat several times while the guest maps and unmaps: maps/unmaps rise, live mappings move.
  : >/tmp/ctl-samples
  for s in 1 2 3 4 5; do
    if ctl stat "$VM"; then
      cp /tmp/ctl.out "/tmp/ctl-stat.$s"
      echo "$(stat_field /tmp/ctl.out iommu maps) $(stat_field /tmp/ctl.out iommu unmaps) $(stat_field /tmp/ctl.out iommu live_mappings)" >>/tmp/ctl-samples
    fi
    sleep 2
  done
  [ -f /tmp/ctl-stat.1 ] && sed 's/^/  stat| /' /tmp/ctl-stat.1 && cp /tmp/ctl-stat.1 "$RIG_RESULTS/ctl-stat.txt" 2>/dev/null
  # The serial console's drops and the control channel's own health are in the same report.
  if grep -q '^serial uart rx_dropped=[0-9]* output_dropped=[0-9]*$' /tmp/ctl-stat.1 2>/dev/null &&
     grep -q '^control clients=[1-9][0-9]* refused_peers=0 accept_failures=0$' /tmp/ctl-stat.1; then
    rig_pass ctl/stat-serial-control "$(grep -E '^(serial|control) ' /tmp/ctl-stat.1 | tr '\n' ' ')"
  else rig_fail ctl/stat-serial-control "no serial/control lines in: $(tr '\n' '|' </tmp/ctl-stat.1 2>/dev/null | head -c 300)"; fi
  n=$(grep -c . /tmp/ctl-samples)
  first=$(head -n 1 /tmp/ctl-samples); last=$(tail -n 1 /tmp/ctl-samples)
  set -- $first; m1=${1:-0}; u1=${2:-0}
  set -- $last; m2=${1:-0}; u2=${2:-0}
  if [ "$n" -ge 2 ] && [ "$m2" -gt "$m1" ] && [ "$u2" -gt "$u1" ]; then
    rig_pass ctl/stat-counters "maps $m1 -> $m2, unmaps $u1 -> $u2 over $n samples"
  else rig_fail ctl/stat-counters "$n samples: $(tr '\n' '|' </tmp/ctl-samples)"; fi
  # Between requests a strict guest holds the same few mappings, and each request's own mapping
  # lives for microseconds: five samples 2 s apart can all land between requests on a loaded host.
  # Then sample back to back (up to 60 more) until a second value shows up.
  live_values() { awk '{ print $3 }' /tmp/ctl-samples | sort -u; }
  s=0
  while [ $s -lt 60 ] && [ "$(live_values | grep -c .)" -lt 2 ]; do
    ctl stat "$VM" && echo "- - $(stat_field /tmp/ctl.out iommu live_mappings)" >>/tmp/ctl-samples
    s=$((s + 1))
  done
  lives=$(live_values | tr '\n' ' ')
  if [ "$(live_values | grep -c .)" -ge 2 ]; then rig_pass ctl/stat-live "live mappings seen: $lives($(grep -c . /tmp/ctl-samples) samples)"
  else rig_fail ctl/stat-live "live mappings did not move: $lives"; fi
  if grep -q '^domain [0-9]* ' /tmp/ctl-stat.1 2>/dev/null && grep -q '^endpoint [0-9]* device=blk0 domain=[0-9]' /tmp/ctl-stat.1; then
    rig_pass ctl/stat-domains "$(grep -m1 '^endpoint [0-9]* device=blk0' /tmp/ctl-stat.1 | cut -c1-120)"
  else rig_fail ctl/stat-domains "no domain/endpoint lines for blk0: $(grep -E '^(domain|endpoint)' /tmp/ctl-stat.1 2>/dev/null | head -n 2 | tr '\n' '|')"; fi
  epid=$(sed -n 's/^device blk0 .*endpoint=\([0-9]*\).*/\1/p' /tmp/ctl-stat.1 2>/dev/null)

  if ctl debug "$VM" dump && grep -q '^domain [0-9]*: [0-9]* mappings' /tmp/ctl.out; then
    rig_pass ctl/dump "$(grep -c '^  \[' /tmp/ctl.out) mappings listed; $(head -n 1 /tmp/ctl.out)"
  else rig_fail ctl/dump "rc=$? $(head -n 2 /tmp/ctl.out | tr '\n' '|')"; fi

  if [ -n "$epid" ] && ctl debug "$VM" fault "$epid" write 0x12345000; then rig_pass ctl/fault-injected "$(head -n 1 /tmp/ctl.out)"
  else rig_fail ctl/fault-injected "endpoint '${epid:-?}': $(head -n 1 /tmp/ctl.out)"; fi
  rig_cli_error ctl/fault-bad-endpoint "no endpoint 7" "$LKVM" debug "$VM" fault 7
  rig_cli_error ctl/debug-malformed "unknown debug command" "$LKVM" debug "$VM" frobnicate
  rig_cli_error ctl/fault-malformed "usage|unexpected" "$LKVM" debug "$VM" fault "${epid:-1}" sideways

  if ctl debug "$VM" fail-next blk0; then rig_pass ctl/fail-next "$(head -n 1 /tmp/ctl.out)"
  else rig_fail ctl/fail-next "$(head -n 1 /tmp/ctl.out)"; fi
  sleep 3
  if ctl stat "$VM" && [ "$(sed -n 's/^device blk0 .*forced_failures=\([0-9]*\).*/\1/p' /tmp/ctl.out)" = 1 ]; then
    rig_pass ctl/forced-failure "blk0 forced_failures=1 and the VM still answers"
  else rig_fail ctl/forced-failure "$(grep '^device blk0' /tmp/ctl.out)"; fi
else
  rig_fail ctl/guest-busy "L2 never started its DMA loop: $(tail -n 2 /tmp/l2-ctl-main.log 2>/dev/null | tr '\n' '|')"
fi

wait "$main_job"
set -- $(cat /tmp/ctl-main.rc 2>/dev/null); L2_RC=${1:-none}; L2_TIMEDOUT=${2:-0}; L2_BOOT_S=${3:-}; L2_TOTAL_S=${4:-}
[ "$L2_BOOT_S" = none ] && L2_BOOT_S=
L2_LOG=/tmp/l2-ctl-main.log
l2_expect ctl-main dmaloop viommufault ioerror
l2_expect_rc ctl-main 0
if [ -e "$CTL_DIR/$VM.sock" ]; then rig_fail ctl/main-no-socket "$CTL_DIR/$VM.sock left behind"
else rig_pass ctl/main-no-socket "socket removed at poweroff"; fi
if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then rig_fail ctl/main-no-process "pid $pid still there"
else rig_pass ctl/main-no-process "no lkvm process left"; fi
rig_cli_error ctl/stat-after-exit "no VM named '$VM'" "$LKVM" stat "$VM"

# --- 2. a stale socket (SIGKILL): list removes it; the next VM of that name replaces it; lkvm stop ---
# claim_then_kill NAME : start a VM, SIGKILL it once its socket exists (before the guest boots)
claim_then_kill() {
  setsid "$LKVM" run $K -c 1 -m 128 --name "$1" -p "$A rigend=hang" </dev/null >/tmp/ctl-kill.log 2>&1 &
  _kp=$!
  wait_file "$CTL_DIR/$1.sock" 20
  kill -KILL "$_kp" 2>/dev/null; wait "$_kp" 2>/dev/null
  [ -S "$CTL_DIR/$1.sock" ]
}
if claim_then_kill rig-stale; then
  ctl list
  if [ ! -e "$CTL_DIR/rig-stale.sock" ] && ! grep -q rig-stale /tmp/ctl.out; then rig_pass ctl/list-removes-stale "stale socket of a killed VM removed, not listed"
  else rig_fail ctl/list-removes-stale "$(ls "$CTL_DIR" | tr '\n' ' ') / $(tr '\n' '|' </tmp/ctl.out)"; fi
else rig_fail ctl/list-removes-stale "no stale socket to remove (lkvm did not create one?)"; fi

if claim_then_kill rig-stop; then
  rig_cli_error ctl/stat-stale "not running" "$LKVM" stat rig-stop
else rig_fail ctl/stat-stale "no stale socket for rig-stop"; fi
# This guest reboots once (blkpersist: write, reboot, verify) and then waits: its socket must
# outlive the reboot, with the same name and pid.
rm -f /tmp/ctl-stop.rc
mkdisk /tmp/ctl-disk2.img 8 zero
( run_l2 ctl-stop "$LKVM" run $K -c 1 -m 256 --name rig-stop --console serial -d /tmp/ctl-disk2.img \
    -p "$A rigchecks=blkpersist rigend=hang"
  echo "$L2_RC $L2_TIMEDOUT ${L2_BOOT_S:-none} $L2_TOTAL_S" >/tmp/ctl-stop.rc ) &
stop_job=$!
if wait_log /tmp/l2-ctl-stop.log RIG-L2-END 240; then
  rig_pass ctl/stale-replaced "a VM named rig-stop booted over the stale socket"
  if grep -q 'RIG-CHECK PASS blkpersist' /tmp/l2-ctl-stop.log && ctl stat rig-stop && grep -q '^vm rig-stop ' /tmp/ctl.out; then
    rig_pass ctl/after-reboot "the guest rebooted; $(head -n 1 /tmp/ctl.out | cut -c1-80)"
  else rig_fail ctl/after-reboot "no stat after the reboot: $(head -n 1 /tmp/ctl.out)"; fi
  if ctl stop rig-stop; then rig_pass ctl/stop "$(head -n 1 /tmp/ctl.out)"
  else rig_fail ctl/stop "rc=$?: $(head -n 1 /tmp/ctl.out)"; fi
else rig_fail ctl/stale-replaced "the second rig-stop never booted: $(tail -n 1 /tmp/l2-ctl-stop.log 2>/dev/null)"; fi
wait "$stop_job"
set -- $(cat /tmp/ctl-stop.rc 2>/dev/null); L2_RC=${1:-none}; L2_TIMEDOUT=${2:-0}; L2_BOOT_S=${3:-}; L2_TOTAL_S=${4:-}
[ "$L2_BOOT_S" = none ] && L2_BOOT_S=
L2_LOG=/tmp/l2-ctl-stop.log
l2_expect_rc ctl-stop 0
if [ -e "$CTL_DIR/rig-stop.sock" ]; then rig_fail ctl/stop-no-socket "socket left behind"
else rig_pass ctl/stop-no-socket "socket removed after lkvm stop"; fi

# SIGTERM (or Ctrl-C) is an orderly exit too: the socket goes with it.
setsid "$LKVM" run $K -c 1 -m 128 --name rig-term -p "$A rigend=hang" </dev/null >/tmp/ctl-term.log 2>&1 &
term_pid=$!
if wait_file "$CTL_DIR/rig-term.sock" 20; then
  kill -TERM "$term_pid"; wait "$term_pid"; term_rc=$?
  if [ ! -e "$CTL_DIR/rig-term.sock" ] && [ "$term_rc" = 143 ]; then rig_pass ctl/sigterm-cleanup "exit $term_rc, socket removed"
  else rig_fail ctl/sigterm-cleanup "exit $term_rc; socket: $(ls "$CTL_DIR" | tr '\n' ' ')"; fi
else kill -KILL "$term_pid" 2>/dev/null; rig_fail ctl/sigterm-cleanup "no socket appeared: $(head -n 1 /tmp/ctl-term.log)"; fi

# --- 3. nothing left ---------------------------------------------------------------------------------
if ctl list && [ "$(grep -vc '^NAME' /tmp/ctl.out)" = 0 ]; then rig_pass ctl/list-empty-after "no VM listed at the end"
else rig_fail ctl/list-empty-after "$(tr '\n' '|' </tmp/ctl.out)"; fi
left=$(ls -A "$CTL_DIR" 2>/dev/null | tr '\n' ' ')
check_eq ctl/dir-empty "${left:-empty}" empty
rm -f /tmp/ctl-disk.img /tmp/ctl-disk2.img
rig_finish
