# Helpers for test scripts that run inside L1 (busybox sh). Source with:   . /mnt/rig/lib.sh
#
# Result lines (counted on the host by guest-images/rig-test.sh; only lines that START with
# "RIG-CHECK" count, so L2 output echoed with a prefix is never double-counted):
#   RIG-CHECK PASS <name> <detail>
#   RIG-CHECK FAIL <name> <reason>
# A script should end with `rig_finish`, which exits non-zero if any check failed.
#
# Running an L2 guest:
#   run_l2 TAG CMD...        runs the VMM command CMD (an executable, not a shell function, so
#                            that its PID is the VMM's) with stdin /dev/null and a timeout
#                            ($L2_TIMEOUT, default 300 s); echoes its output as "  TAG| line";
#                            keeps the raw output in /tmp/l2-TAG.log (copied to /mnt/results/) and
#                            sets L2_RC L2_BOOT_S L2_TOTAL_S L2_HWM_KB L2_RSS_KB L2_GUESTMAP_KB
#                            L2_OWN_KB L2_TIMEDOUT L2_LOG; prints one RIG-RESULT line.
#   l2_expect TAG NAME...    turns the L2 guest's own RIG-CHECK lines for NAME... into checks of
#                            this script named TAG/NAME (missing -> FAIL)
#   l2_expect_rc TAG RC      check that the VMM exited with RC
#   l2_expect_text TAG NAME TEXT   check that the VMM's output contains TEXT
#
# Memory figures (sampled while the guest runs, the RSS snapshot when RIG-L2-USERSPACE shows up):
#   hwm_kb       VmHWM, peak resident set of the VMM process
#   rss_kb       total Rss over /proc/PID/smaps
#   guestmap_kb  Rss of the single largest mapping (the guest RAM)
#   own_kb       rss_kb - guestmap_kb: the VMM's own memory

RIG_TALLY=${RIG_TALLY:-/tmp/rig-tally.$$}
: >"$RIG_TALLY"
RIG_RESULTS=${RIG_RESULTS:-/mnt/results}
L2_KERNEL=${L2_KERNEL:-/l2/Image}
L2_INITRD=${L2_INITRD:-/l2/initrd-l2.cpio}
RIG_CR=$(printf '\r')

rig_now() { cut -d' ' -f1 /proc/uptime; }
rig_log() { echo "rig: $*"; }

# --- result lines ---------------------------------------------------------------------------------
rig_pass() { _rn=$1; shift; echo "RIG-CHECK PASS $_rn $*"; echo "PASS $_rn" >>"$RIG_TALLY"; }
rig_fail() { _rn=$1; shift; echo "RIG-CHECK FAIL $_rn $*"; echo "FAIL $_rn" >>"$RIG_TALLY"; }

# check NAME CMD... : PASS when CMD succeeds; FAIL with the last line of its output otherwise
check() {
  _n=$1; shift
  if _o=$("$@" 2>&1); then rig_pass "$_n" "$(echo "$_o" | tail -n 1)"
  else rig_fail "$_n" "'$*' failed: $(echo "$_o" | tail -n 1)"; fi
}
# check_eq NAME GOT WANT
check_eq() {
  if [ "$2" = "$3" ]; then rig_pass "$1" "$2"; else rig_fail "$1" "got '$2', wanted '$3'"; fi
}

# rig_finish : summary line; exit status 1 if any check failed, 2 if there were no checks at all
# rig_need_lkvm : sets LKVM (default: lkvm from /mnt/bin) and ends the script with a FAIL when that
# binary or /dev/kvm is missing, so a broken L1 gives one clear line instead of a cascade.
rig_need_lkvm() {
  LKVM=${LKVM:-lkvm}
  command -v "$LKVM" >/dev/null 2>&1 ||
    { rig_fail lkvm-present "no lkvm binary in /mnt/bin (build it: make lkvm; run-l1.sh copies \$LKVM_BIN)"; rig_finish; }
  [ -c /dev/kvm ] || { rig_fail kvm-present "/dev/kvm missing in L1"; rig_finish; }
}

rig_finish() {
  _p=$(grep -c '^PASS' "$RIG_TALLY")
  _f=$(grep -c '^FAIL' "$RIG_TALLY")
  echo "rig: script summary: $_p passed, $_f failed"
  [ "$_f" -eq 0 ] || exit 1
  [ "$_p" -gt 0 ] || exit 2
  exit 0
}

# --- L2 runs --------------------------------------------------------------------------------------
# smaps_summary PID : "total_rss_kb largest_mapping_rss_kb"
smaps_summary() {
  awk '
    /^[0-9a-f]+-[0-9a-f]+ / { cur = 0; next }
    /^Rss:/ { total += $2; cur = $2; if (cur > big) big = cur }
    END { print total + 0, big + 0 }' "/proc/$1/smaps" 2>/dev/null
}

# _l2_sampler PID FILE TIMEOUT : records VmHWM into FILE while PID lives; after TIMEOUT seconds
# kills PID's process group (run_l2 starts the VMM with setsid, so PGID = PID)
_l2_sampler() {
  _t_end=$(awk -v t="$(rig_now)" -v d="$3" 'BEGIN { print t + d }')
  while :; do
    _h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
    if [ -z "$_h" ]; then              # gone or a zombie (no mm any more):
      kill -KILL -"$1" 2>/dev/null     # children it left behind must not hold the output open
      break
    fi
    echo "$_h" >"$2.tmp" && mv "$2.tmp" "$2"
    if awk -v t="$(rig_now)" -v e="$_t_end" 'BEGIN { exit !(t > e) }'; then
      echo timeout >"$2.timeout"
      rig_kill_group "$1"
      break
    fi
    sleep 0.3
  done
}

# rig_kill_group PID : TERM, then KILL after 3 s, to the process group PID leads (or to PID)
rig_kill_group() {
  kill -TERM -"$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
  _k=0
  while [ $_k -lt 30 ] && kill -0 -"$1" 2>/dev/null; do sleep 0.1; _k=$((_k + 1)); done
  kill -KILL -"$1" 2>/dev/null
  return 0
}

# rig_capture SECS FILE CMD... : run CMD (own session, stdin /dev/null) with stdout+stderr in FILE;
# kill its whole process group after SECS. Returns CMD's status, 124 after a timeout.
# (Unlike $(timeout ...), a child left behind by CMD cannot keep the caller waiting.)
rig_capture() {
  _secs=$1 _file=$2; shift 2
  setsid "$@" </dev/null >"$_file" 2>&1 &
  _cp=$!
  _ticks=0
  while rig_alive "$_cp" && [ $_ticks -lt $((_secs * 10)) ]; do sleep 0.1; _ticks=$((_ticks + 1)); done
  if rig_alive "$_cp"; then
    rig_kill_group "$_cp"; wait "$_cp" 2>/dev/null; return 124
  fi
  wait "$_cp"; _crc=$?
  kill -KILL -"$_cp" 2>/dev/null   # leftovers of the group, if any
  return $_crc
}
# rig_cli_error NAME PATTERN CMD... : a command-line error as users must see it. CMD fails
# (non-zero) within 20 s, prints exactly one line, which matches PATTERN (extended regexp,
# case-insensitive), and boots no guest.
rig_cli_error() {
  _n=$1 _pat=$2; shift 2
  _t0=$(rig_now)
  rig_capture 20 /tmp/cli.out "$@"; _rc=$?
  _out=$(cat /tmp/cli.out)
  _dt=$(awk -v a="$_t0" -v b="$(rig_now)" 'BEGIN { printf "%.1f", b - a }')
  _lines=$(printf '%s\n' "$_out" | grep -c .)
  _first=$(printf '%s\n' "$_out" | grep -m1 . | cut -c1-200)
  if [ "$_rc" = 0 ]; then rig_fail "$_n" "exit status 0 for '$*': $_first"
  elif [ "$_rc" = 124 ]; then rig_fail "$_n" "still running after 20s: '$*'"
  elif printf '%s\n' "$_out" | grep -q -e 'RIG-L2' -e 'Booting Linux' -e 'Linux version'; then rig_fail "$_n" "a guest was started"
  elif [ "$_lines" != 1 ]; then rig_fail "$_n" "$_lines lines of output, wanted a one-line error; first: $_first"
  elif ! printf '%s\n' "$_out" | grep -qiE -- "$_pat"; then rig_fail "$_n" "error does not name the problem ($_pat): $_first"
  else rig_pass "$_n" "rc=$_rc in ${_dt}s: $_first"; fi
}
# rig_alive PID : PID exists and is not a zombie
rig_alive() { [ -e "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

run_l2() {
  _tag=$1; shift
  L2_LOG=/tmp/l2-$_tag.log
  _fifo=/tmp/l2-$_tag.fifo
  _hwmf=/tmp/l2-$_tag.hwm
  rm -f "$_fifo" "$_hwmf" "$_hwmf.timeout" "$L2_LOG"
  mkfifo "$_fifo"
  L2_BOOT_S=; L2_RSS_KB=0; L2_GUESTMAP_KB=0; L2_OWN_KB=0; L2_HWM_KB=0; L2_TIMEDOUT=0
  rig_log "[$_tag] $*"
  _t0=$(rig_now)
  # setsid: the VMM leads its own process group (and keeps its PID: a non-interactive shell's
  # child is no group leader, so busybox setsid execs in place), so a timeout kills all of it.
  setsid "$@" </dev/null >"$_fifo" 2>&1 &
  _pid=$!
  _l2_sampler "$_pid" "$_hwmf" "${L2_TIMEOUT:-300}" &
  _spid=$!
  while IFS= read -r _l; do
    _l=${_l%"$RIG_CR"}
    printf '%s\n' "$_l" >>"$L2_LOG"
    printf '  %s| %s\n' "$_tag" "$_l"
    case $_l in
      *RIG-L2-USERSPACE*)
        if [ -z "$L2_BOOT_S" ]; then
          _t1=$(rig_now)
          L2_BOOT_S=$(awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.2f", b - a }')
          set -- $(smaps_summary "$_pid")
          L2_RSS_KB=${1:-0}; L2_GUESTMAP_KB=${2:-0}; L2_OWN_KB=$((L2_RSS_KB - L2_GUESTMAP_KB))
        fi ;;
    esac
  done <"$_fifo"
  wait "$_pid"; L2_RC=$?
  wait "$_spid" 2>/dev/null
  L2_TOTAL_S=$(awk -v a="$_t0" -v b="$(rig_now)" 'BEGIN { printf "%.2f", b - a }')
  L2_HWM_KB=$(cat "$_hwmf" 2>/dev/null || echo 0)
  [ -f "$_hwmf.timeout" ] && L2_TIMEDOUT=1
  rm -f "$_fifo"
  [ -d "$RIG_RESULTS" ] && cp "$L2_LOG" "$RIG_RESULTS/" 2>/dev/null
  echo "RIG-RESULT tag=$_tag rc=$L2_RC boot_s=${L2_BOOT_S:-none} total_s=$L2_TOTAL_S hwm_kb=$L2_HWM_KB rss_kb=$L2_RSS_KB guestmap_kb=$L2_GUESTMAP_KB own_kb=$L2_OWN_KB timeout=$L2_TIMEDOUT"
  return 0
}

# Why an L2 run may have produced nothing: a one-line hint for FAIL reasons.
_l2_state() {
  if [ "$L2_TIMEDOUT" = 1 ]; then echo "VMM killed after ${L2_TIMEOUT:-300}s"
  elif [ -z "$L2_BOOT_S" ]; then echo "L2 never reached userspace (VMM rc=$L2_RC; last line: $(tail -n 1 "$L2_LOG" 2>/dev/null | cut -c1-120))"
  else echo "VMM rc=$L2_RC"; fi
}

# l2_expect TAG NAME... : the L2 guest's verdict on each named check (from the last run's log).
# A name reported several times (two boots, or a console shown twice) passes only if no line failed.
l2_expect() {
  _tag=$1; shift
  for _c in "$@"; do
    _lines=$(tr -d '\r' <"$L2_LOG" | sed -n "s/^.*RIG-CHECK \(PASS\|FAIL\) $_c\( \|\$\)/\1 /p")
    if [ -z "$_lines" ]; then rig_fail "$_tag/$_c" "not reported by L2: $(_l2_state)"
    elif echo "$_lines" | grep -q '^FAIL'; then rig_fail "$_tag/$_c" "$(echo "$_lines" | grep '^FAIL' | head -n 1 | cut -c6-)"
    else rig_pass "$_tag/$_c" "$(echo "$_lines" | head -n 1 | cut -c6-)"; fi
  done
}
l2_expect_rc() {
  if [ "$L2_RC" = "$2" ] && [ "$L2_TIMEDOUT" = 0 ]; then rig_pass "$1/exit" "VMM exit status $L2_RC after ${L2_TOTAL_S}s"
  else rig_fail "$1/exit" "VMM exit status $L2_RC, wanted $2 ($(_l2_state))"; fi
}
l2_expect_text() {
  if tr -d '\r' <"$L2_LOG" | grep -qF -- "$3"; then rig_pass "$1/$2" "'$3' seen in VMM output"
  else rig_fail "$1/$2" "'$3' not in VMM output ($(_l2_state))"; fi
}
l2_expect_boot() {
  if [ -n "$L2_BOOT_S" ]; then rig_pass "$1/boot" "RIG-L2-USERSPACE after ${L2_BOOT_S}s"
  else rig_fail "$1/boot" "$(_l2_state)"; fi
}

# --- disks and devices ------------------------------------------------------------------------------
# mkdisk FILE MiB [zero|random]
mkdisk() {
  dd if="/dev/${3:-zero}" of="$1" bs=1M count="$2" 2>/dev/null
}
file_sha() { sha256sum "$1" | cut -d' ' -f1; }

# median : median of the numbers on stdin (one per line); empty input gives "-"
median() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B : A / B with two decimals; "-" when either is missing or B is 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }

# Benchmarks (tests/bench/*-bench.sh) keep one "CONFIG BS MBPS" line per measurement in a file.
# blkread_record CONFIG TAG FILE : appends the MB/s of each RIG-BLKREAD line of the last L2 run
# ($L2_LOG) to FILE; says why and fails when that run's blkread check did not pass.
blkread_record() {
  if tr -d '\r' <"$L2_LOG" | grep -q '^RIG-CHECK PASS blkread'; then
    tr -d '\r' <"$L2_LOG" | sed -n 's/^RIG-BLKREAD bs=\([^ ]*\) .* mbps=\([0-9.]*\).*/\1 \2/p' |
      while read -r _bs _mbps; do echo "$1 $_bs $_mbps" >>"$3"; done
  else
    echo "bench: $2 failed (rc=$L2_RC): $(tr -d '\r' <"$L2_LOG" | grep -m1 'RIG-CHECK FAIL' | cut -c1-160)"
    return 1
  fi
}
# bench_rounds N CONFIG... : calls the script's bench_run CONFIG ROUND for every CONFIG, N rounds
# (configurations alternate, so host noise hits them alike)
bench_rounds() {
  _rounds=$1; shift
  _round=1
  while [ "$_round" -le "$_rounds" ]; do
    for _bench_cfg in "$@"; do bench_run "$_bench_cfg" "$_round"; done
    _round=$((_round + 1))
  done
}
# bench_median FILE CONFIG BS : median MB/s of CONFIG at block size BS
bench_median() { awk -v c="$2" -v b="$3" '$1 == c && $2 == b { print $3 }' "$1" | median; }

# lkvm_pid : the newest lkvm process (L1's busybox has no pgrep)
lkvm_pid() {
  for _d in /proc/[0-9]*; do [ "$(cat "$_d/comm" 2>/dev/null)" = lkvm ] && echo "${_d#/proc/}"; done | sort -n | tail -n 1
}
# stat_follow NAME FILE : in the background (pid in STAT_PID), `lkvm stat NAME` every 0.5 s appended
# to FILE, from the moment an lkvm process exists until none does.
stat_follow() {
  : >"$2"
  ( i=0; while [ -z "$(lkvm_pid)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    while [ -n "$(lkvm_pid)" ]; do "$LKVM" stat "$1" >>"$2" 2>/dev/null; sleep 0.5; done ) &
  STAT_PID=$!
}
# nvme_bdf : PCI address of the first NVMe controller (class 0x010802)
nvme_bdf() {
  for _d in /sys/bus/pci/devices/*; do
    [ "$(cat "$_d/class")" = 0x010802 ] && { basename "$_d"; return 0; }
  done
  return 1
}
# nvme_ns BDF : block device name (nvme0n1) of the first namespace of the NVMe controller at BDF, as
# the host's nvme driver shows it; fails while there is none. Without NVMe multipath the namespace
# sits under the controller (nvme/nvme0/nvme0n1); with it (Debian's kernels) the controller holds
# a hidden path (nvme0c0n1) and the block device is the head, listed by the controller's subsystem.
nvme_ns() {
  for _c in /sys/bus/pci/devices/"$1"/nvme/nvme*; do
    [ -e "$_c" ] || continue
    for _n in "$_c"/nvme*n1 /sys/class/nvme-subsystem/*/nvme*n1; do
      case ${_n##*/} in *c*) continue ;; esac
      case $_n in /sys/class/nvme-subsystem/*) [ -e "${_n%/*}/${_c##*/}" ] || continue ;; esac
      [ -e "/sys/block/${_n##*/}" ] && { echo "${_n##*/}"; return 0; }
    done
  done
  return 1
}
# bind_vfio BDF : hand the device to vfio-pci; prints its IOMMU group number
bind_vfio() {
  _d=/sys/bus/pci/devices/$1
  [ -e "$_d/driver" ] && echo "$1" >"$_d/driver/unbind"
  echo vfio-pci >"$_d/driver_override"
  echo "$1" >/sys/bus/pci/drivers_probe
  _g=$(basename "$(readlink "$_d/iommu_group")")
  _i=0
  while [ ! -c "/dev/vfio/$_g" ] && [ $_i -lt 50 ]; do sleep 0.1; _i=$((_i + 1)); done
  [ -c "/dev/vfio/$_g" ] || { echo "bind_vfio: /dev/vfio/$_g did not appear" >&2; return 1; }
  echo "$_g"
}
# unbind_vfio BDF : give the device back to its normal driver
unbind_vfio() {
  _d=/sys/bus/pci/devices/$1
  [ -e "$_d/driver" ] && echo "$1" >"$_d/driver/unbind"
  echo >"$_d/driver_override"
  echo "$1" >/sys/bus/pci/drivers_probe
}

# The L2 guest under Debian's QEMU on KVM, with the virtio-mmio devices lkvm also provides.
# Usage: run_l2 TAG $(qemu_l2_base SMP MiB) [qemu args...] -append "CMDLINE"
# (word-split on purpose: no argument in it contains a space)
qemu_l2_base() {
  echo "qemu-system-aarch64 -accel kvm -M virt,gic-version=3 -cpu host -smp $1 -m $2" \
    "-nodefaults -display none -kernel $L2_KERNEL -initrd $L2_INITRD"
}
