# Runs in L1. Page-table handover for an assigned PCI function (iommu/page_tables.md, "Shadowed
# endpoints"): the L1 NVMe (QEMU's default MSI-X layout) behind --viommu vfio,tables=on, with our
# viommu_tables driver in L2 (rigtables=1), which sees TABLE_F_SHADOW in PROBE and INVALIDATEs new
# mappings too; lkvm mirrors the guest's table into the VFIO container. Strict (iommu.strict=1)
# and lazy (iommu.strict=0) mode, each twice in a row: 8 MiB written to the NVMe and read back,
# MSI-X through the ITS; `lkvm stat` sampled while the guest runs shows the NVMe's domain in table
# mode with shadow=yes and host runs that follow the guest's mappings, and after exit no VM answers
# and lkvm's teardown leaves no host DMA entry. With L1's dma_entry_limit lowered, refused runs
# give the guest I/O errors, lkvm counts them and exits with nothing mapped. Then L1's nvme driver
# reads what L2 wrote.
#   SHADOW_CASES=strict,lazy,budget picks cases for a targeted run (default all three).
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-300}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -c 1 -m 256 --console serial -n none"  # -n none: no default user-mode NIC
OFF=96  # MiB offset of the pattern L2 writes (vfio.test.sh uses 64..72)
MB=8

B=$(nvme_bdf) || { rig_fail shadow/nvme "no NVMe controller in L1"; rig_finish; }
G=$(bind_vfio "$B") || { rig_fail shadow/bind "could not bind $B to vfio-pci"; rig_finish; }
rig_pass shadow/bind "$B -> vfio-pci, IOMMU group $G"

# shadow_case TAG OFFSET GROUP-TYPE CMDLINE... : one L2 boot with all checks
shadow_case() {
  _t=$1 _off=$2 _type=$3; shift 3
  stat_follow "$_t" "/tmp/shadow-stat-$_t"
  run_l2 "$_t" "$LKVM" run $K --name "$_t" --vfio-pci "$B" --viommu vfio,tables=on --debug \
    -p "$A $* rigtables=1 rigviommu=1 rigiommutype=$_type rigchecks=tables,iommumode,nvme,nvmerw,msix rignvmeoff=$_off rignvmemb=$MB"
  wait "$STAT_PID" 2>/dev/null
  # The shadowed domain's host runs (host_runs=) and the VFIO container's host entries, per sample.
  _st=/tmp/shadow-stat-$_t
  sed -n 's/^domain .* shadow=yes host_runs=\([0-9]*\) .*/\1/p' "$_st" >"/tmp/shadow-runs-$_t"
  sed -n 's/^vfio group .* \([0-9]*\)\/[0-9]* host entries.*/\1/p' "$_st" >"/tmp/shadow-host-$_t"
  l2_expect_boot "$_t"
  l2_expect "$_t" tables iommumode nvme nvmerw msix
  l2_expect_rc "$_t" 0
  _runs=$(sort -nu "/tmp/shadow-runs-$_t" | tr '\n' ' ')
  _max=$(sort -n "/tmp/shadow-runs-$_t" | tail -n 1)
  if [ "${_max:-0}" -gt 0 ]; then rig_pass "$_t/stat-shadow" "host_runs seen: $_runs; last: $(grep 'shadow=yes' "$_st" | tail -n 1 | sed 's/.* shadow=yes //')"
  else rig_fail "$_t/stat-shadow" "no shadowed domain with host runs in lkvm stat: '${_runs:-none}' ($(grep '^domain' "$_st" | tail -n 1))"; fi
  _h=$(sort -nu "/tmp/shadow-host-$_t" | tr '\n' ' ')
  if [ "$(sort -nu "/tmp/shadow-host-$_t" | wc -l)" -ge 2 ]; then rig_pass "$_t/stat-host" "VFIO host entries followed the guest: $_h"
  else rig_fail "$_t/stat-host" "VFIO host entries did not move: '${_h:-none}'"; fi
  if "$LKVM" stat "$_t" >/dev/null 2>&1; then rig_fail "$_t/stat-gone" "lkvm stat still answers after exit"
  else rig_pass "$_t/stat-gone" "no VM named $_t after exit"; fi
  l2_expect_text "$_t" teardown 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned'
  L2_SUM=$(tr -d '\r' <"$L2_LOG" | sed -n "s/.*RIG-CHECK PASS nvmerw ${MB}MiB sha256=\([0-9a-f]*\).*/\1/p" | head -n 1)
}

SHADOW_CASES=$(echo "${SHADOW_CASES:-strict lazy budget}" | tr ',' ' ')
last_off= last_sum=
for mode in $SHADOW_CASES; do
  case $mode in strict) strict=1 type=DMA base=$OFF ;; lazy) strict=0 type=DMA-FQ base=$((OFF + 2 * MB)) ;; *) continue ;; esac
  for round in 1 2; do
    off=$((base + (round - 1) * MB))
    shadow_case "shadow-$mode-$round" "$off" "$type" "iommu.strict=$strict"
    last_off=$off last_sum=$L2_SUM
  done
done

# --- the host's budget: L1's dma_entry_limit too small for the guest's mappings ----------------------
# lkvm leaves refused runs unmapped and answers their INVALIDATE with S_NOMEM; our driver fails those
# DMA mappings (I/O errors in L2, which keeps running); lkvm counts the refusals and exits cleanly
# with nothing mapped.
LIMIT=/sys/module/vfio_iommu_type1/parameters/dma_entry_limit
case " $SHADOW_CASES " in *" budget "*)
  if [ -w "$LIMIT" ]; then
    old_limit=$(cat "$LIMIT")
    echo "${RIG_DMA_LIMIT:-24}" >"$LIMIT"
    T=shadow-budget
    stat_follow "$T" "/tmp/shadow-stat-$T"
    run_l2 "$T" "$LKVM" run $K --name "$T" --vfio-pci "$B" --viommu vfio,tables=on --debug \
      -p "$A rigtables=1 rigviommu=1 rigchecks=tables,nvmeflood rignvmewait=40"
    wait "$STAT_PID" 2>/dev/null
    echo "$old_limit" >"$LIMIT"
    l2_expect_boot "$T"
    l2_expect "$T" tables nvmeflood
    l2_expect_rc "$T" 0
    l2_expect_text "$T" nomem-logged 'DMA entry budget exhausted'
    l2_expect_text "$T" teardown 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned'
    _r=$(sed -n 's/^domain .* shadow_refusals=\([0-9]*\) .*/\1/p' "/tmp/shadow-stat-$T" | sort -n | tail -n 1)
    if [ "${_r:-0}" -gt 0 ]; then rig_pass "$T/stat-refusals" "lkvm stat counted $_r refused runs (dma_entry_limit=${RIG_DMA_LIMIT:-24})"
    else rig_fail "$T/stat-refusals" "no shadow_refusals in lkvm stat: $(grep '^domain' "/tmp/shadow-stat-$T" | tail -n 1)"; fi
  else
    rig_fail shadow-budget/limit "$LIMIT is not writable"
  fi ;;
esac

# --- back to L1's nvme driver: it reads what L2 wrote last ---------------------------------------
unbind_vfio "$B"
i=0; while [ -z "$(nvme_ns "$B")" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ns=$(nvme_ns "$B")
if [ -n "$ns" ]; then
  rig_pass shadow/release "$B back on the nvme driver ($ns)"
  [ -n "$last_off" ] && check_eq shadow/l1-sees-l2-data \
    "$(dd if="/dev/$ns" bs=1M count=$MB skip="$last_off" iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" \
    "${last_sum:-none}"
else
  rig_fail shadow/release "no namespace came back after unbinding $B"
fi
rig_finish
