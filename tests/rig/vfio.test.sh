# Runs in L1. VFIO passthrough with lkvm: the L1 NVMe (behind QEMU's SMMUv3) assigned to L2 with
# --vfio-pci, without a vIOMMU and behind --viommu vfio (strict, lazy, passthrough). In every case
# L2 writes a pattern, reads it back with matching checksums, and its NVMe interrupts are MSI-X
# through the ITS. Also: L1 sees the pinned memory follow the guest's mappings and drop to nothing
# after exit (VmLck of lkvm, which VFIO type-1 charges for every pinned page), the device can be
# assigned again after a clean exit, SIGTERM and SIGKILL, and bad BDFs fail with one line. (A MAP
# beyond VFIO's entry budget: viommu-refusal.test.sh.)
# Works with both NVMe layouts: run it once more with NVME_OPTS=,msix-exclusive-bar=on
# (make test covers that layout with vfio-exclusive-bar.test.sh, in an L1 boot of its own).
. /mnt/rig/lib.sh

rig_need_lkvm
"$LKVM" run --help 2>&1 | grep -q -- --vfio-pci || { rig_fail vfio/flag "this lkvm has no --vfio-pci"; rig_finish; }
L2_TIMEOUT=${L2_TIMEOUT:-150}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -c 1 -m 256 --console serial -n none"  # -n none: no default user-mode NIC
OFF=64   # MiB offset of the pattern L2 writes (the rest of the disk is left alone)

B=$(nvme_bdf) || { rig_fail vfio/nvme "no NVMe controller in L1"; rig_finish; }
case $(awk 'NR <= 6 && $1 != "0x0000000000000000" { n++ } END { print n + 0 }' "/sys/bus/pci/devices/$B/resource") in
  1) layout="MSI-X table and PBA inside BAR0 with the registers (QEMU's default)" ;;
  *) layout="MSI-X in a BAR of its own (msix-exclusive-bar=on)" ;;
esac
rig_log "NVMe $B: $layout"

# --- negative cases first: nothing may start, one line each -------------------------------------
rig_cli_error vfio/no-such-bdf '0000:00:1f\.0.*no such PCI device' "$LKVM" run $K --vfio-pci 0000:00:1f.0 -p "$A"
rig_cli_error vfio/bad-bdf 'not a PCI address' "$LKVM" run $K --vfio-pci 00:1f -p "$A"
# The NVMe is still on its nvme driver here.
rig_cli_error vfio/not-vfio-pci "$B.*bound to nvme, not vfio-pci" "$LKVM" run $K --vfio-pci "$B" -p "$A"
VIRTIO9P=$(for d in /sys/bus/pci/devices/*; do [ "$(cat "$d/vendor")" = 0x1af4 ] && basename "$d" && break; done)
[ -n "$VIRTIO9P" ] && rig_cli_error vfio/virtio-bound "$VIRTIO9P.*bound to virtio-pci" "$LKVM" run $K --vfio-pci "$VIRTIO9P" -p "$A"

l1_before=$(dd if=/dev/nvme0n1 bs=1M count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
G=$(bind_vfio "$B") || { rig_fail vfio/bind "could not bind $B to vfio-pci"; rig_finish; }
rig_pass vfio/bind "$B -> vfio-pci, IOMMU group $G, reserved: $(tr '\n' ';' <"/sys/kernel/iommu_groups/$G/reserved_regions")"
rig_cli_error vfio/twice 'given twice' "$LKVM" run $K --vfio-pci "$B" --vfio-pci "${B#0000:}" -p "$A"

# --- VmLck sampler: what VFIO has pinned for lkvm, every 0.2 s ------------------------------------
# vmlck_start TAG : samples the newest lkvm process into /tmp/vmlck-TAG until it exits
vmlck_start() {
  : >"/tmp/vmlck-$1"
  ( i=0; pid=
    while [ -z "$pid" ] && [ $i -lt 100 ]; do pid=$(lkvm_pid); sleep 0.1; i=$((i + 1)); done
    [ -n "$pid" ] || exit 0
    while kb=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [ -n "$kb" ]; do
      echo "$kb" >>"/tmp/vmlck-$1"; sleep 0.2
    done ) &
  VMLCK_PID=$!
}
vmlck_stop() { wait "$VMLCK_PID" 2>/dev/null; }
# vmlck_summary TAG : "min max distinct-values samples"
vmlck_summary() { sort -n "/tmp/vmlck-$1" | awk '{ v[NR] = $1; if (!($1 in seen)) { seen[$1] = 1; d++ } } END { print v[1] + 0, v[NR] + 0, d + 0, NR + 0 }'; }

# `lkvm stat NAME` every 0.5 s while the VM lives (stat_follow); then stat_series TAG puts the
# vIOMMU's live mappings (the guest's view) into /tmp/stat-TAG, and the VFIO container's host DMA
# entries (what the DmaMapper put in the host IOMMU for them) into /tmp/stathost-TAG.
stat_start() { stat_follow "$1" "/tmp/statall-$1"; }
stat_series() {
  sed -n 's/^iommu .* live_mappings=\([0-9]*\) .*/\1/p' "/tmp/statall-$1" >"/tmp/stat-$1"
  sed -n 's/^vfio group .* \([0-9]*\)\/[0-9]* host entries.*/\1/p' "/tmp/statall-$1" >"/tmp/stathost-$1"
}

# run_case TAG EXPECT-PINNED LKVM-ARGS... : one L2 boot with the nvme checks
run_case() {
  _tag=$1 _pinned=$2; shift 2
  vmlck_start "$_tag"
  [ "$_pinned" = dynamic ] && stat_start "$_tag"
  run_l2 "$_tag" "$LKVM" run $K --name "$_tag" --vfio-pci "$B" "$@"
  vmlck_stop
  if [ "$_pinned" = dynamic ]; then
    wait "$STAT_PID" 2>/dev/null
    stat_series "$_tag"
    _s=$(sort -n "/tmp/stat-$_tag" | uniq | tr '\n' ' ')
    if [ "$(sort -nu "/tmp/stat-$_tag" | wc -l)" -ge 2 ]; then rig_pass "$_tag/stat" "lkvm stat live_mappings seen: $_s"
    else rig_fail "$_tag/stat" "lkvm stat live_mappings did not move: '${_s:-none}'"; fi
    _h=$(sort -n "/tmp/stathost-$_tag" | uniq | tr '\n' ' ')
    if [ "$(sort -nu "/tmp/stathost-$_tag" | wc -l)" -ge 2 ]; then rig_pass "$_tag/stat-host" "lkvm stat host DMA entries seen: $_h"
    else rig_fail "$_tag/stat-host" "lkvm stat host DMA entries did not move: '${_h:-none}'"; fi
    if "$LKVM" stat "$_tag" >/dev/null 2>&1; then rig_fail "$_tag/stat-gone" "lkvm stat still answers after exit"
    else rig_pass "$_tag/stat-gone" "no VM named $_tag after exit"; fi
  fi
  l2_expect_boot "$_tag"
  l2_expect "$_tag" nvme nvmerw msix
  l2_expect_rc "$_tag" 0
  set -- $(vmlck_summary "$_tag")
  case $_pinned in
    all) # no vIOMMU: all 256 MiB of guest RAM pinned for the whole run
      if [ "${2:-0}" -ge 262144 ]; then rig_pass "$_tag/pinned" "VmLck max ${2} KiB (all guest RAM), $4 samples"
      else rig_fail "$_tag/pinned" "VmLck max ${2:-0} KiB, wanted >= 262144 (all RAM)"; fi ;;
    dynamic) # translated: pinned memory follows the guest's mappings, a small fraction of RAM.
      # A strict guest unmaps each buffer as soon as its DMA ends, so a 0.2 s sampler may see only
      # "nothing" and one peak: two distinct values, one of them above 0, show the pinning moved.
      if [ "${3:-0}" -ge 2 ] && [ "${2:-0}" -gt 0 ] && [ "${2:-0}" -lt 131072 ]; then rig_pass "$_tag/pinned" "VmLck min $1 max $2 KiB, $3 distinct values in $4 samples"
      else rig_fail "$_tag/pinned" "VmLck min ${1:-?} max ${2:-?} KiB, ${3:-0} distinct values in ${4:-0} samples"; fi ;;
  esac
  l2_sum=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS nvmerw 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
}

# --- 1. no vIOMMU: all guest RAM mapped at boot, as kvmtool does ---------------------------------
run_case vfio-plain all -p "$A rigchecks=nvme,nvmerw,msix rignvmeoff=$OFF"
plain_sum=$l2_sum
# The same device again right away: the previous run left it reusable.
run_case vfio-again all -p "$A rigchecks=nvme,nvmerw,msix rignvmeoff=$((OFF + 1))"

# --- 2. --viommu vfio: strict (the arm64 default), lazy, passthrough ----------------------------
run_case vfio-strict dynamic --viommu vfio --debug -p "$A rigchecks=nvme,nvmerw,msix,show rignvmeoff=$((OFF + 2))"
l2_expect_text vfio-strict teardown 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned'
used=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*vfio: group [0-9]* at exit: .*; \([0-9]*\) maps and \([0-9]*\) unmaps issued.*/\1 \2/p' | head -n 1)
set -- $used
if [ "${1:-0}" -gt 256 ] && [ "${2:-0}" -gt 256 ]; then rig_pass vfio-strict/host-maps "$1 VFIO maps and $2 unmaps for the guest's strict-mode DMA"
else rig_fail vfio-strict/host-maps "VFIO maps/unmaps issued: '${used:-none}', wanted > 256 each"; fi
l2_expect_text vfio-strict probe-msi '0x0000000008090000 0x000000000809ffff msi'
run_case vfio-lazy dynamic --viommu vfio -p "$A iommu.strict=0 rigchecks=nvme,nvmerw,msix rignvmeoff=$((OFF + 3))"
run_case vfio-passthrough all --viommu vfio -p "$A iommu.passthrough=1 rigchecks=nvme,nvmerw,msix rignvmeoff=$((OFF + 4))"

# --viommu (all): an emulated virtio-blk (endpoint 0x10000 + slot) and the assigned NVMe (endpoint
# = RID) behind the same virtio-iommu.
mkdisk /tmp/vfio-blk.img 16 zero
run_case vfio-all dynamic --viommu -d /tmp/vfio-blk.img \
  -p "$A rigchecks=nvme,nvmerw,msix,blkrw rigblkdev=vda rignvmeoff=$((OFF + 8))"
l2_expect vfio-all blkrw
rm -f /tmp/vfio-blk.img

# Boot bypass, a guest without the virtio-iommu driver: the nvme driver gives up waiting for its
# IOMMU (deferred probe timeout) and DMAs untranslated; lkvm maps guest RAM one to one only once
# the driver enables bus mastering.
run_case vfio-bootbypass all --viommu vfio \
  -p "$A rigmods=virtio_mmio,nvme rignvmewait=90 rigchecks=nvme,nvmerw,msix rignvmeoff=$((OFF + 7))"

# --- 3. a guest reboot: the machine is rebuilt, the device reset and assigned again ---------------
token=$$-$(cut -d' ' -f1 /proc/uptime)
run_l2 vfio-reboot "$LKVM" run $K --name vfio-reboot --vfio-pci "$B" --viommu vfio --debug \
  -p "$A rigchecks=nvmereboot,nvmerw,msix rignvmeoff=$((OFF + 6)) rignvmetoken=$token"
l2_expect_text vfio-reboot rebooted 'RIG-L2-REBOOT'
l2_expect vfio-reboot nvmereboot nvmerw msix
l2_expect_rc vfio-reboot 0
n=$(tr -d '\r' <"$L2_LOG" | grep -c 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned')
if [ "$n" -ge 2 ]; then rig_pass vfio-reboot/teardown "both boots ended with 0 host DMA entries and 0 KiB pinned"
else rig_fail vfio-reboot/teardown "$n clean teardown lines, wanted 2 (one per boot)"; fi

# --- 4. SIGTERM and SIGKILL mid-run: the next run still gets the device --------------------------
signal_case() {  # signal_case SIGNAL EXPECTED-RC
  _tag=vfio-sig$1
  ( sleep 1; i=0; while ! grep -q RIG-L2-USERSPACE "/tmp/l2-$_tag.log" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
    sleep 2; kill -s "$1" "$(lkvm_pid)" ) &
  _killer=$!
  run_l2 "$_tag" "$LKVM" run $K --name "$_tag" --vfio-pci "$B" --viommu vfio -p "$A rigchecks=nvme rigsleep=60"
  wait "$_killer" 2>/dev/null
  if [ "$L2_RC" = "$2" ]; then rig_pass "$_tag/exit" "lkvm exit status $L2_RC after SIG$1"
  else rig_fail "$_tag/exit" "lkvm exit status $L2_RC, wanted $2 ($(_l2_state))"; fi
}
signal_case TERM 143
signal_case KILL 137
run_case vfio-after-kill dynamic --viommu vfio -p "$A rigchecks=nvme,nvmerw,msix rignvmeoff=$((OFF + 5))"

# --- 5. back to L1's nvme driver: it reads what L2 wrote ------------------------------------------
unbind_vfio "$B"
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/nvme0n1 ]; then
  rig_pass vfio/release "$B back on the nvme driver"
  check_eq vfio/l1-sees-l2-data "$(dd if=/dev/nvme0n1 bs=1M count=1 skip=$OFF iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" "${plain_sum:-none}"
  check_eq vfio/first-mib-untouched "$(dd if=/dev/nvme0n1 bs=1M count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" "$l1_before"
else
  rig_fail vfio/release "/dev/nvme0n1 did not come back after unbinding $B"
fi
rig_finish
