# The demo. guest-images/demo.sh runs it inside L1 (the nested rig) or, given DEMO_VFIO_PCI=BDF,
# directly on an arm64 host with /dev/kvm. lkvm boots the L2 guest on KVM with a virtio disk, a
# virtio-rng and the NVMe controller assigned with VFIO behind lkvm's virtio-iommu
# (--vfio-pci BDF --viommu vfio). The guest prints what it sees (CPUs, memory, disks, its IOMMU
# group and reserved regions, MSI-X vectors), writes 1 MiB to the NVMe and reads it back; L1 shows
# what lkvm has mapped while the guest runs (`lkvm stat`), that nothing is left after exit, and
# reads the guest's data back through its own nvme driver.
# (POSIX sh: busybox in L1, bash on a host.) Environment: DEMO_VFIO_PCI (default in the rig: the
# first NVMe; empty: no device assigned), RIG_LIB, L2_KERNEL, L2_INITRD, LKVM (default lkvm).
. "${RIG_LIB:-/mnt/rig/lib.sh}"
LKVM=${LKVM:-lkvm}
DISK=${DEMO_DISK:-/tmp/demo-disk.img}
OFF=64   # MiB offset of the 1 MiB the guest writes to the NVMe
mkdisk "$DISK" 64 zero
if [ -n "${DEMO_VFIO_PCI+set}" ]; then B=$DEMO_VFIO_PCI; else B=$(nvme_bdf) || B=; fi

A="console=ttyS0 quiet panic=-1 rigcpus=2 rigmem=256"
if [ -z "$B" ]; then   # no device to assign: the disk and rng demo
  CMD="$LKVM run --name demo -k $L2_KERNEL -i $L2_INITRD -c 2 -m 256 -d $DISK --rng"
  echo "demo: $CMD -p \"console=ttyS0 quiet panic=-1 rigchecks=show,cpus,mem,rng,blkpersist ...\""
  run_l2 demo $CMD -p "$A rigchecks=show,cpus,mem,rng,blkpersist"
  l2_expect demo show cpus mem rng blkwrite blkpersist
  l2_expect_rc demo 0
  rm -f "$DISK"
  rig_finish
fi

# --- L1: hand the NVMe to vfio-pci ---------------------------------------------------------------
D=/sys/bus/pci/devices/$B
[ -e "$D" ] || { rig_fail demo/vfio-bind "no PCI device $B"; rig_finish; }
drv=$(basename "$(readlink "$D/driver" 2>/dev/null)" 2>/dev/null)
G=$(bind_vfio "$B") || { rig_fail demo/vfio-bind "could not bind $B to vfio-pci"; rig_finish; }
rig_pass demo/vfio-bind "$B [$(sed 's/^0x//' "$D/vendor"):$(sed 's/^0x//' "$D/device")] ${drv:-unbound} -> vfio-pci, host IOMMU group $G"

# --- the guest ---------------------------------------------------------------------------------
# blkpersist goes first: boot 1 writes the disk and reboots (lkvm rebuilds the machine and assigns
# the NVMe again), boot 2 checks the disk, then does the rest; rigsleep keeps it up for lkvm stat.
CHECKS="blkpersist,cpus,mem,rng,nvmerw,msix,iommumsi,show"
CMD="$LKVM run --name demo -k $L2_KERNEL -i $L2_INITRD -c 2 -m 256 -d $DISK --rng --vfio-pci $B --viommu vfio"
echo "demo: $CMD -p \"console=ttyS0 quiet panic=-1 rigchecks=$CHECKS ...\""

# While the guest runs (once it has printed its view): what lkvm has mapped, from L1.
rm -f /tmp/l2-demo.log /tmp/demo-stat.txt
(
  i=0
  while ! grep -q 'RIG-CHECK [A-Z]* show' /tmp/l2-demo.log 2>/dev/null; do
    [ $i -ge 3000 ] && exit 0
    sleep 0.2; i=$((i + 1))
  done
  "$LKVM" stat demo >/tmp/demo-stat.txt 2>&1
  pid=$(sed -n 's/^vm demo pid=\([0-9]*\) .*/\1/p' /tmp/demo-stat.txt)
  lck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  echo "demo: while the guest runs, '$LKVM stat demo' in L1 says (the vIOMMU's live mappings are the"
  echo "demo: guest's DMA mappings; the 'vfio group' line is what lkvm put in the host IOMMU for them):"
  sed 's/^/demo:   /' /tmp/demo-stat.txt
  echo "demo: and lkvm (pid ${pid:-?}) has ${lck:-?} KiB of guest RAM pinned for DMA (VmLck), of 262144 KiB"
  echo "${lck:-none}" >/tmp/demo-vmlck
) &
watcher=$!
echo "demo: the guest boots twice (it checks its disk across a reboot) and reports what it sees:"
run_l2 demo $CMD --debug -p "$A rignvmeoff=$OFF rigsleep=5 rigchecks=$CHECKS"
wait "$watcher" 2>/dev/null

l2_expect demo blkwrite blkpersist cpus mem rng nvmerw msix iommumsi show
l2_expect_rc demo 0
if grep -q '^iommu .* live_mappings=[1-9]' /tmp/demo-stat.txt 2>/dev/null; then
  rig_pass demo/stat "$(grep '^iommu ' /tmp/demo-stat.txt | cut -d' ' -f2-5)"
else
  rig_fail demo/stat "no live vIOMMU mappings in lkvm stat: $(head -n 1 /tmp/demo-stat.txt 2>/dev/null)"
fi

# --- after exit: nothing left ---------------------------------------------------------------------
echo "demo: after the guest powered off (one pair of lines per boot; the guest rebooted once):"
tr -d '\r' <"$L2_LOG" | sed -n 's/^lkvm: debug: \(vfio: .*\)/demo:   lkvm --debug: \1/p'
if out=$("$LKVM" stat demo 2>&1); then rig_fail demo/gone "lkvm stat demo still answers: $(echo "$out" | head -n 1)"
else rig_pass demo/gone "'$LKVM stat demo': $(echo "$out" | head -n 1)"; fi
l2_expect_text demo unpinned 'vfio: after teardown: 0 host DMA entries, 0 KiB pinned'

# --- L1 reads back what the guest wrote -----------------------------------------------------------
want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS nvmerw 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
unbind_vfio "$B"
ns=
i=0
while [ $i -lt 200 ]; do
  ns=$(nvme_ns "$B") && [ -b "/dev/$ns" ] && break
  ns=; sleep 0.1; i=$((i + 1))
done
if [ -n "$ns" ]; then
  got=$(dd if="/dev/$ns" bs=1M count=1 skip=$OFF iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -n "$want" ] && [ "$got" = "$want" ]; then rig_pass demo/host-readback "$B back on ${drv:-its driver}: MiB $OFF of /dev/$ns has sha256=$got, what the guest wrote"
  else rig_fail demo/host-readback "MiB $OFF of /dev/$ns: sha256=$got, the guest wrote ${want:-nothing}"; fi
else
  rig_fail demo/host-readback "$B has no NVMe namespace after giving it back to ${drv:-its driver}"
fi
rm -f "$DISK"
rig_finish
