# Runs in L1 (guest-images/bench.sh starts it). Boots the same L2 kernel + initramfs with lkvm and
# with Debian's QEMU on KVM, N times each (default 5, alternating so that host noise hits both
# alike), 1 vCPU, 256 MiB, no devices, and prints medians:
#   boot_s   VMM start -> RIG-L2-USERSPACE on the guest console (L1 /proc/uptime, 10 ms steps)
#   hwm_mib  peak resident set of the VMM process (VmHWM)
#   own_mib  resident set minus the guest RAM mapping (the single largest mapping in smaps),
#            sampled when the marker appears: what the VMM itself costs
# and the lkvm/QEMU ratios. Lines starting with RIG-BENCH are the results; a copy goes to
# /mnt/results/boot-bench.txt. Exit status: non-zero if a VMM failed to boot the guest.
. /mnt/rig/lib.sh

N=${N:-5}
L2_TIMEOUT=${L2_TIMEOUT:-120}
DATA=/tmp/bench.tsv
: >"$DATA"
bad=0

have_lkvm=0
command -v lkvm >/dev/null 2>&1 && have_lkvm=1
[ "$have_lkvm" = 1 ] || echo "boot-bench: no lkvm in /mnt/bin; measuring QEMU only"

# One run; the guest idles 1 s after the marker so the RSS snapshot is taken on a live VMM.
bench_run() {  # bench_run VMM I
  case $1 in
    qemu) run_l2 "bench-qemu-$2" $(qemu_l2_base 1 256) -serial stdio \
            -append "console=ttyAMA0 quiet panic=-1 rigsleep=1" ;;
    lkvm) run_l2 "bench-lkvm-$2" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -n none -c 1 -m 256 \
            --console serial -p "console=ttyS0 quiet panic=-1 rigsleep=1" ;;
  esac
  if [ -n "$L2_BOOT_S" ] && [ "$L2_RC" = 0 ]; then
    printf '%s %s %s %s\n' "$1" "$L2_BOOT_S" "$L2_HWM_KB" "$L2_OWN_KB" >>"$DATA"
  else
    echo "boot-bench: $1 run $2 failed (rc=$L2_RC, boot=${L2_BOOT_S:-none})"
    bad=1
  fi
}

i=1
while [ $i -le "$N" ]; do
  bench_run qemu $i
  [ "$have_lkvm" = 1 ] && bench_run lkvm $i
  i=$((i + 1))
done

col_median() {  # col_median VMM COLUMN [divisor]
  awk -v v="$1" -v c="$2" -v d="${3:-1}" '$1 == v { printf "%.2f\n", $c / d }' "$DATA" | median
}

{
  echo "RIG-BENCH L2 boot, 1 vCPU, 256 MiB, no devices; N=$N per VMM; medians"
  for v in qemu lkvm; do
    n=$(awk -v v="$v" '$1 == v' "$DATA" | wc -l)
    [ "$n" -gt 0 ] || continue
    eval "${v}_boot=$(col_median $v 2)"
    eval "${v}_hwm=$(col_median $v 3 1024)"
    eval "${v}_own=$(col_median $v 4 1024)"
    eval "echo \"RIG-BENCH vmm=$v runs=$n boot_s=\$${v}_boot hwm_mib=\$${v}_hwm own_mib=\$${v}_own\""
  done
  if [ "$have_lkvm" = 1 ] && [ -n "${lkvm_boot:-}" ] && [ -n "${qemu_boot:-}" ]; then
    echo "RIG-BENCH ratio lkvm/qemu boot=$(ratio "$lkvm_boot" "$qemu_boot") hwm=$(ratio "$lkvm_hwm" "$qemu_hwm") own=$(ratio "$lkvm_own" "$qemu_own")"
  fi
  echo "RIG-BENCH raw: vmm boot_s hwm_kb own_kb"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
} | tee /tmp/boot-bench.txt
cp /tmp/boot-bench.txt "$RIG_RESULTS/boot-bench.txt" 2>/dev/null
exit $bad
