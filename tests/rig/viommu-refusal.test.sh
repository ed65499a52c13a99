# Runs in L1. MAPs beyond VFIO's DMA entry budget (L1's vfio_iommu_type1.dma_entry_limit lowered):
# lkvm answers S_NOMEM and, because the 6.12 guest's virtio-iommu driver never reads a MAP's status
# (Linux 6.8 and later queue MAPs without a status buffer), also posts a MAPPING fault record on the
# eventq. The guest's dmesg shows the fault reports for IOVAs lkvm refused, the guest keeps running
# (later checks pass), lkvm warned before the budget ran out, and `lkvm stat` counts every refusal
# as reported or dropped. The warning's advice works: under the same budget a guest booted with
# iommu.passthrough=1 runs the same NVMe load with no MAP refused; and the granule that is not
# advised (page_size=2M, which Linux refuses) is refused by lkvm with one line.
. /mnt/rig/lib.sh

rig_need_lkvm
"$LKVM" run --help 2>&1 | grep -q -- --vfio-pci || { rig_fail refusal/flag "this lkvm has no --vfio-pci"; rig_finish; }
L2_TIMEOUT=${L2_TIMEOUT:-180}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -c 1 -m 256 --console serial -n none"  # -n none: no default user-mode NIC
T=vfio-budget

B=$(nvme_bdf) || { rig_fail refusal/nvme "no NVMe controller in L1"; rig_finish; }
LIMIT=/sys/module/vfio_iommu_type1/parameters/dma_entry_limit
[ -w "$LIMIT" ] || { rig_fail refusal/limit "$LIMIT is not writable"; rig_finish; }
G=$(bind_vfio "$B") || { rig_fail refusal/bind "could not bind $B to vfio-pci"; rig_finish; }
old_limit=$(cat "$LIMIT")
echo "${RIG_DMA_LIMIT:-24}" >"$LIMIT"

# `lkvm stat` once the guest's last check has run (it then sleeps 8 s before powering off).
( i=0; while ! grep -q 'RIG-CHECK [A-Z]* msix' "/tmp/l2-$T.log" 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.2; i=$((i + 1)); done
  "$LKVM" stat "$T" >"/tmp/stat-$T" 2>&1 ) &
stater=$!
run_l2 "$T" "$LKVM" run $K --name "$T" --vfio-pci "$B" --viommu vfio --debug \
  -p "$A rigchecks=nvme,nvmeflood,mapfaults,msix rignvmewait=40 rigsleep=8"
wait "$stater" 2>/dev/null

l2_expect_boot "$T"
l2_expect "$T" nvme nvmeflood mapfaults msix
l2_expect_rc "$T" 0
l2_expect_text "$T" nomem-logged 'DMA entry budget exhausted'
l2_expect_text "$T" near-budget-warned 'DMA budget nearly used'
l2_expect_text "$T" near-budget-advice 'leave it out of the vIOMMU (--viommu virtio) or boot the guest with iommu.passthrough=1'
if tr -d '\r' <"$L2_LOG" | grep 'DMA budget nearly used' | grep -q page_size; then
  rig_fail "$T/no-granule-advice" "the warning still advises a page_size"
else rig_pass "$T/no-granule-advice" "the warning advises no page_size"; fi

# Every IOVA the guest logged a fault report for is one lkvm refused and reported.
tr -d '\r' <"$L2_LOG" | sed -n 's/.*MAP of domain [0-9]* at IOVA \(0x[0-9a-f]*\) answered [A-Z]*, reported as a fault.*/\1/p' |
  sort -u >"/tmp/refused-$T"
tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-L2-MAPFAULT.*fault from EP [0-9]* at \(0x[0-9a-f]*\).*/\1/p' | sort -u >"/tmp/guestfaults-$T"
n_guest=$(wc -l <"/tmp/guestfaults-$T")
n_match=$(grep -cxFf "/tmp/refused-$T" "/tmp/guestfaults-$T")
if [ "$n_guest" -gt 0 ] && [ "$n_match" = "$n_guest" ]; then
  rig_pass "$T/fault-iovas" "$n_guest IOVAs in the guest's fault reports, all refused MAPs lkvm reported ($(wc -l <"/tmp/refused-$T") reported); e.g. $(head -n 1 "/tmp/guestfaults-$T")"
else
  rig_fail "$T/fault-iovas" "$n_guest IOVAs in guest fault reports, $n_match of them refused by lkvm; unmatched: $(grep -vxFf "/tmp/refused-$T" "/tmp/guestfaults-$T" | head -n 3 | tr '\n' ' ')"
fi

# lkvm stat: refusals = reported + dropped (rate limit, no event buffer), and some were reported.
line=$(grep '^iommu ' "/tmp/stat-$T")
field() { echo "$line" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"; }
refusals=$(field map_refusals) reported=$(field refusals_reported) dropped=$(field refusals_dropped)
if [ -n "$refusals" ] && [ "$refusals" -gt 0 ] && [ "$reported" -gt 0 ] && [ "$refusals" = $((reported + dropped)) ]; then
  rig_pass "$T/stat-refusals" "map_refusals=$refusals = refusals_reported=$reported + refusals_dropped=$dropped"
else
  rig_fail "$T/stat-refusals" "lkvm stat: '$(echo "$line" | cut -c1-300)'"
fi

# The advice works under the same budget: passthrough (bypass domains) maps guest RAM once, in a
# few host entries, and the NVMe load that had MAPs refused above runs with none refused.
T2=vfio-budget-passthrough
run_l2 "$T2" "$LKVM" run $K --name "$T2" --vfio-pci "$B" --viommu vfio \
  -p "$A iommu.passthrough=1 rigchecks=nvme,nvmeflood,iommumode rigiommutype=identity rignvmewait=40"
l2_expect_boot "$T2"
l2_expect "$T2" nvme nvmeflood iommumode
l2_expect_rc "$T2" 0
if tr -d '\r' <"$L2_LOG" | grep -q 'budget exhausted'; then
  rig_fail "$T2/no-refusal" "$(tr -d '\r' <"$L2_LOG" | grep -m1 'budget exhausted' | cut -c1-200)"
else rig_pass "$T2/no-refusal" "no MAP refused with dma_entry_limit=$(cat "$LIMIT")"; fi
echo "$old_limit" >"$LIMIT"
unbind_vfio "$B"

# Not advised, and refused before anything is set up: a granule above the guest's page size.
rig_capture 20 /tmp/granule-2m.err "$LKVM" run $K --viommu vfio,page_size=2M --vfio-pci "$B"; rc=$?
if [ "$rc" = 2 ] && grep -q 'granule 2 MiB is larger than any arm64 page, and Linux refuses' /tmp/granule-2m.err; then
  rig_pass granule-2m-refused "status 2: $(grep -m1 granule /tmp/granule-2m.err | cut -c1-160)"
else rig_fail granule-2m-refused "status $rc: $(head -n 2 /tmp/granule-2m.err | tr '\n' ' ' | cut -c1-200)"; fi
rig_finish
