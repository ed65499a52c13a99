# Runs in L1. The vCPU features lkvm turns on (vmm/cpu_features.hpp): pointer authentication and SVE
# whenever L1's KVM offers them, the PMUv3 with --pmu. What L1 offers is read from L1 itself (its
# /proc/cpuinfo Features, its longest SVE vector) and from L1's KVM capabilities as lkvm --debug
# names them; each L2 check compares the guest's /proc/cpuinfo, SVE vector length and perf PMU
# against that. L2 runs its commands through `lkvm sandbox` (L1's busybox in L2). Four L2 boots.
. /mnt/rig/lib.sh

rig_need_lkvm
SB_TIMEOUT=${L2_TIMEOUT:-300}
K="-k $L2_KERNEL -i $L2_INITRD"

# sb TAG FLAGS... -- CMD : lkvm sandbox with stdout in /tmp/cpu-TAG.out, stderr in /tmp/cpu-TAG.err; sets SB_RC
sb() {
  _tag=$1; shift
  rig_log "[$_tag] lkvm sandbox $*"
  rig_capture "$SB_TIMEOUT" "/tmp/cpu-$_tag.err" sh -c 'out=$1; shift; exec "$@" >"$out"' sh "/tmp/cpu-$_tag.out" \
    "$LKVM" sandbox $K "$@"
  SB_RC=$?
  sed "s/^/  $_tag err| /" "/tmp/cpu-$_tag.err" | grep -v 'lkvm: debug: virtio-mmio slot' | head -n 30
  sed "s/^/  $_tag out| /" "/tmp/cpu-$_tag.out" | head -n 30
  [ -d "$RIG_RESULTS" ] && cp "/tmp/cpu-$_tag.out" "/tmp/cpu-$_tag.err" "$RIG_RESULTS/" 2>/dev/null
}
# has WORD LIST : WORD is one of the space-separated words of LIST
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
# max_sve_bytes : the longest SVE vector this kernel gives a task, in bytes (empty without SVE);
# the default length is restored
max_sve_bytes() {
  _f=/proc/sys/abi/sve_default_vector_length
  [ -w "$_f" ] || return 0
  _old=$(cat "$_f"); echo -1 >"$_f"; cat "$_f"; echo "$_old" >"$_f"
}

# What L2 prints: its Features line, its longest SVE vector in bytes, its perf PMUs and PMU interrupts.
PROBE='echo "FEATURES $(grep -m1 "^Features" /proc/cpuinfo | cut -d: -f2)"
f=/proc/sys/abi/sve_default_vector_length
if [ -w $f ]; then echo -1 >$f; echo "SVEMAX $(cat $f)"; else echo "SVEMAX none"; fi
echo "PMUS $(ls /sys/bus/event_source/devices | tr "\n" " ")"
echo "PMUIRQ $(grep -i pmu /proc/interrupts | tr -s " " | tr "\n" " ")"
echo "PMULOG $(dmesg | grep -m1 "hw perfevents" | cut -c1-160)"'
field() { sed -n "s/^$1 //p" "$2" | head -n 1; }

# --- what L1 offers ------------------------------------------------------------------------------------
L1_FEATURES=$(grep -m1 '^Features' /proc/cpuinfo | cut -d: -f2)
L1_SVE=$(max_sve_bytes)
rig_log "L1 Features:$L1_FEATURES"
rig_log "L1 longest SVE vector: ${L1_SVE:-none} bytes"

# --- 1. default: pointer authentication and SVE as L1's KVM offers them, no PMU ----------------------------
sb plain --debug -- sh -c "$PROBE"
if [ "$SB_RC" != 0 ]; then rig_fail cpu/plain-boot "lkvm sandbox exit status $SB_RC"; rig_finish; fi
DEBUG=$(grep -m1 'vCPU features:' /tmp/cpu-plain.err | sed 's/.*vCPU features: //')
L2_FEATURES=$(field FEATURES /tmp/cpu-plain.out)
if [ -n "$DEBUG" ]; then rig_pass cpu/debug-line "$DEBUG"; else rig_fail cpu/debug-line "no 'vCPU features:' line with --debug"; fi
rig_pass cpu/l1-offers "L1 cpuinfo:$(for w in paca pacg sve sve2; do has $w "$L1_FEATURES" && printf ' %s' $w; done); L1 longest SVE ${L1_SVE:-none} bytes; L1 KVM per lkvm: $DEBUG"

# Pointer authentication: on in L2 exactly when lkvm enabled it, and lkvm enables it when L1 has it.
case $DEBUG in *"pointer authentication on"*) pauth_on=1 ;; *) pauth_on=0 ;; esac
if has paca "$L2_FEATURES" && has pacg "$L2_FEATURES"; then l2_pauth=1; else l2_pauth=0; fi
if has paca "$L1_FEATURES" && has pacg "$L1_FEATURES"; then l1_pauth=1; else l1_pauth=0; fi
if [ "$l2_pauth" = "$pauth_on" ] && [ "$pauth_on" = "$l1_pauth" ]; then
  rig_pass cpu/pauth "L1 paca+pacg=$l1_pauth, lkvm enabled=$pauth_on, L2 paca+pacg=$l2_pauth"
else
  rig_fail cpu/pauth "L1 paca+pacg=$l1_pauth, lkvm enabled=$pauth_on (${DEBUG%%;*}), L2 paca+pacg=$l2_pauth"
fi

# SVE: the same, and L2's longest vector is L1's.
case $DEBUG in *"SVE on"*) sve_on=1 ;; *) sve_on=0 ;; esac
has sve "$L2_FEATURES" && l2_sve=1 || l2_sve=0
has sve "$L1_FEATURES" && l1_sve=1 || l1_sve=0
L2_SVE=$(field SVEMAX /tmp/cpu-plain.out)
if [ "$l2_sve" = "$sve_on" ] && [ "$sve_on" = "$l1_sve" ]; then
  rig_pass cpu/sve "L1 sve=$l1_sve, lkvm enabled=$sve_on, L2 sve=$l2_sve"
else
  rig_fail cpu/sve "L1 sve=$l1_sve, lkvm enabled=$sve_on, L2 sve=$l2_sve"
fi
if [ "$sve_on" = 1 ]; then
  check_eq cpu/sve-longest "L2 ${L2_SVE} bytes" "L2 ${L1_SVE} bytes"
fi

# No --pmu: no PMU in the guest.
case $(field PMUS /tmp/cpu-plain.out) in
  *armv8_pmuv3*) rig_fail cpu/no-pmu-by-default "L2 has a PMU without --pmu: $(field PMUS /tmp/cpu-plain.out)" ;;
  *) rig_pass cpu/no-pmu-by-default "L2 perf PMUs: $(field PMUS /tmp/cpu-plain.out)" ;;
esac

# --- 2. --sve-max-vl ----------------------------------------------------------------------------------------
rig_capture 20 /tmp/cpu-badvl.err "$LKVM" run $K --sve-max-vl 384; rc=$?
if [ "$rc" = 2 ] && grep -q -- '--sve-max-vl 384: an SVE vector length is a power of two' /tmp/cpu-badvl.err; then
  rig_pass cpu/sve-max-vl-invalid "status 2: $(head -n 1 /tmp/cpu-badvl.err | cut -c1-140)"
else
  rig_fail cpu/sve-max-vl-invalid "status $rc: $(head -n 2 /tmp/cpu-badvl.err | tr '\n' ' ' | cut -c1-200)"
fi
if [ "$sve_on" = 1 ]; then
  sb vl256 --sve-max-vl 256 -- sh -c "$PROBE"
  check_eq cpu/sve-max-vl-256 "status $SB_RC, L2 longest SVE $(field SVEMAX /tmp/cpu-vl256.out) bytes" "status 0, L2 longest SVE 32 bytes"
else
  rig_capture 20 /tmp/cpu-nosve.err "$LKVM" run $K --sve-max-vl 256; rc=$?
  if [ "$rc" = 2 ] && grep -q 'KVM_CAP_ARM_SVE is 0' /tmp/cpu-nosve.err; then rig_pass cpu/sve-max-vl-no-sve "refused: $(head -n 1 /tmp/cpu-nosve.err)"
  else rig_fail cpu/sve-max-vl-no-sve "status $rc: $(head -n 1 /tmp/cpu-nosve.err)"; fi
fi

# --- 3. --pmu -------------------------------------------------------------------------------------------------
sb pmu --pmu --debug -- sh -c "$PROBE"
if grep -q 'KVM_CAP_ARM_PMU_V3 is 0' /tmp/cpu-pmu.err; then
  # L1's KVM has no guest PMU: lkvm refuses --pmu with one line, before building anything.
  if [ "$SB_RC" != 0 ] && [ "$(grep -c 'lkvm: error' /tmp/cpu-pmu.err)" = 1 ]; then
    rig_pass cpu/pmu "L1's KVM offers no PMU; --pmu refused: $(grep -m1 'lkvm: error' /tmp/cpu-pmu.err | cut -c1-200)"
  else
    rig_fail cpu/pmu "status $SB_RC; $(grep -c 'lkvm: error' /tmp/cpu-pmu.err) error lines"
  fi
else
  PMUS=$(field PMUS /tmp/cpu-pmu.out)
  case $PMUS in
    *armv8_pmuv3*) rig_pass cpu/pmu-driver "status $SB_RC; L2 perf PMUs: $PMUS; $(field PMULOG /tmp/cpu-pmu.out)" ;;
    *) rig_fail cpu/pmu-driver "status $SB_RC; no armv8_pmuv3 among L2's perf PMUs ($PMUS); $(field PMULOG /tmp/cpu-pmu.out)" ;;
  esac
  # The overflow interrupt: PPI 7 is INTID 23 in /proc/interrupts.
  IRQ=$(field PMUIRQ /tmp/cpu-pmu.out)
  case $IRQ in
    *" 23 "*) rig_pass cpu/pmu-irq "L2 /proc/interrupts: $IRQ" ;;
    *) rig_fail cpu/pmu-irq "no PMU interrupt on INTID 23 in L2's /proc/interrupts: '$IRQ'" ;;
  esac
  # A counter that counts, where L2 has a tool for it. L2 runs L1's userland, which has no perf.
  if command -v perf >/dev/null 2>&1; then
    sb perfstat --pmu -- perf stat -e instructions -x, true
    n=$(sed -n 's/^\([0-9][0-9]*\),.*instructions.*/\1/p' /tmp/cpu-perfstat.err | head -n 1)
    if [ -n "$n" ] && [ "$n" -gt 0 ]; then rig_pass cpu/perf-stat "perf stat counted $n instructions of 'true' in L2"
    else rig_fail cpu/perf-stat "perf stat: $(tail -n 2 /tmp/cpu-perfstat.err | tr '\n' ' ')"; fi
  else
    rig_log "cpu/perf-stat not run: the rig's L1 userland (busybox) has no perf, so L2 has none either"
  fi
fi
rig_finish
