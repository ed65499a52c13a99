# rig-l1: NVME_OPTS=,msix-exclusive-bar=on
# Runs in L1, booted (by guest-images/rig-test.sh, which honours the line above) with the NVMe's
# MSI-X table and PBA in a BAR of their own instead of inside BAR0 with the registers. vfio.test.sh
# covers the default layout in depth; this checks the second one: L1's config space really has the
# MSI-X table and PBA outside BAR0, lkvm traps that BAR and maps BAR0 directly, and L2 reads and
# writes the NVMe with MSI-X interrupts through the ITS, without a vIOMMU and behind --viommu vfio
# (strict).
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-150}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -c 1 -m 256 --console serial -n none"  # -n none: no default user-mode NIC
OFF=96   # MiB offset of the patterns (vfio.test.sh uses 64..72)

B=$(nvme_bdf) || { rig_fail xbar/nvme "no NVMe controller in L1"; rig_finish; }
D=/sys/bus/pci/devices/$B

# --- L1: where the MSI-X table and PBA live (the MSI-X capability, ID 0x11, in config space) -------
# Prints "vectors=N table_bar=N table_off=0xN pba_bar=N pba_off=0xN", or nothing without MSI-X.
msix_cap() {
  od -An -tu1 -v -N 256 "$D/config" | awk '
    { for (i = 1; i <= NF; i++) b[n++] = $i }
    END {
      p = b[52] - b[52] % 4
      while (p >= 64 && p < 256 && guard++ < 48) {
        if (b[p] == 17) {
          ctl = b[p + 2] + 256 * b[p + 3]
          t = b[p + 4] + 256 * b[p + 5] + 65536 * b[p + 6] + 16777216 * b[p + 7]
          q = b[p + 8] + 256 * b[p + 9] + 65536 * b[p + 10] + 16777216 * b[p + 11]
          printf "vectors=%d table_bar=%d table_off=0x%x pba_bar=%d pba_off=0x%x\n", ctl % 2048 + 1, t % 8, t - t % 8, q % 8, q - q % 8
          exit
        }
        p = b[p + 1] - b[p + 1] % 4
      }
    }'
}
cap=$(msix_cap)
tbar=$(echo "$cap" | sed -n 's/.*table_bar=\([0-9]\).*/\1/p')
pbar=$(echo "$cap" | sed -n 's/.*pba_bar=\([0-9]\).*/\1/p')
if [ -z "$cap" ]; then rig_fail xbar/l1-layout "$B has no MSI-X capability"
elif [ "$tbar" != 0 ] && [ "$pbar" != 0 ]; then rig_pass xbar/l1-layout "$B MSI-X $cap: table and PBA in BAR$tbar, registers alone in BAR0"
else rig_fail xbar/l1-layout "$B MSI-X $cap: table or PBA still in BAR0 (was L1 booted with msix-exclusive-bar=on?)"; fi
rig_log "L1 $B resources: $(awk 'NR <= 6 && $1 != "0x0000000000000000" { printf "BAR%d %s-%s ", NR - 1, $1, $2 }' "$D/resource")"

G=$(bind_vfio "$B") || { rig_fail xbar/bind "could not bind $B to vfio-pci"; rig_finish; }
rig_pass xbar/bind "$B -> vfio-pci, IOMMU group $G"

# xbar_case TAG LKVM-ARGS... : one L2 boot, nvmerw + msix, lkvm's BAR plan from --debug
xbar_case() {
  _tag=$1; shift
  run_l2 "$_tag" "$LKVM" run $K --name "$_tag" --vfio-pci "$B" --debug "$@"
  l2_expect "$_tag" nvmerw msix
  l2_expect_rc "$_tag" 0
  _bars=$(tr -d '\r' <"$L2_LOG" | grep "vfio $B BAR")
  _b0=$(echo "$_bars" | grep " BAR0: ")
  _bt=$(echo "$_bars" | grep " BAR${tbar:-x}: ")
  if [ -n "$_b0" ] && [ -n "$_bt" ] && ! echo "$_b0" | grep -q ' trap ' && echo "$_bt" | grep -q ' trap '; then
    rig_pass "$_tag/bar-plan" "BAR0 all direct, BAR$tbar (MSI-X) trapped: $(echo "$_bt" | sed 's/.*: *//')"
  else
    rig_fail "$_tag/bar-plan" "lkvm's BAR plan: $(echo "$_bars" | sed 's/^lkvm: debug: //' | tr '\n' ';')"
  fi
}
xbar_case xbar-plain -p "$A rigchecks=nvmerw,msix rignvmeoff=$OFF"
xbar_case xbar-strict --viommu vfio -p "$A rigchecks=nvmerw,msix,iommumsi rignvmeoff=$((OFF + 1))"
l2_expect xbar-strict iommumsi
l2_expect_text xbar-strict unpinned 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned'

# L1's nvme driver gets the device back and reads what L2 wrote without a vIOMMU.
want=$(tr -d '\r' </tmp/l2-xbar-plain.log 2>/dev/null | sed -n 's/.*RIG-CHECK PASS nvmerw 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
unbind_vfio "$B"
i=0; ns=
while [ $i -lt 200 ] && ! { ns=$(nvme_ns "$B") && [ -b "/dev/$ns" ]; }; do ns=; sleep 0.1; i=$((i + 1)); done
if [ -n "$ns" ]; then
  check_eq xbar/l1-readback "$(dd if="/dev/$ns" bs=1M count=1 skip=$OFF iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" "${want:-none}"
else
  rig_fail xbar/l1-readback "no namespace of $B after unbinding: $(ls "$D/nvme/"* /sys/class/nvme-subsystem/* 2>&1 | tr '\n' ' ')"
fi
rig_finish
