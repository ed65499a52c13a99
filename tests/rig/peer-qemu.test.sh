# Runs in L1. The boot checks of boot.test.sh with Debian's QEMU (KVM) as the L2 VMM: proves the
# rig and the L2 checks themselves work, independently of lkvm. Devices are virtio-mmio
# (-device virtio-*-device on the virt machine), as lkvm provides them.
. /mnt/rig/lib.sh

command -v qemu-system-aarch64 >/dev/null || {
  rig_fail qemu-present "qemu-system-aarch64 not in the L1 image (build with WITH_QEMU=1)"
  rig_finish
}
[ -c /dev/kvm ] || { rig_fail kvm-present "/dev/kvm missing in L1"; rig_finish; }

A="console=ttyAMA0 quiet panic=-1"
Q=$(qemu_l2_base 2 256)

# 1. plain boot: CPUs, memory, clean exit on poweroff
run_l2 qemu-basic $Q -serial stdio -append "$A rigchecks=cpus,mem rigcpus=2 rigmem=256"
l2_expect_boot qemu-basic
l2_expect qemu-basic cpus mem
l2_expect_rc qemu-basic 0

# 2. disks and rng: a writable disk across a guest reboot, a read-only disk, virtio-rng
mkdisk /tmp/rw.img 16 zero
mkdisk /tmp/ro.img 16 random
ro_sum=$(file_sha /tmp/ro.img)
run_l2 qemu-dev $Q -serial stdio \
  -drive file=/tmp/rw.img,if=none,id=rw,format=raw -device virtio-blk-device,drive=rw \
  -drive file=/tmp/ro.img,if=none,id=ro,format=raw,readonly=on -device virtio-blk-device,drive=ro \
  -device virtio-rng-device \
  -append "$A rigchecks=blkpersist,blkro,rng"
l2_expect qemu-dev blkwrite blkpersist blkro rng
l2_expect_rc qemu-dev 0
# The payload the guest wrote must be in the image file, at 1 MiB.
want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS blkwrite 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
got=$(dd if=/tmp/rw.img bs=1M skip=1 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -n "$want" ] && [ "$want" = "$got" ]; then rig_pass qemu-dev/blk-file "payload found in the backing file"
else rig_fail qemu-dev/blk-file "backing file holds sha256 $got at 1MiB, guest wrote ${want:-nothing}"; fi
check_eq qemu-dev/ro-file-unchanged "$(file_sha /tmp/ro.img)" "$ro_sum"
rm -f /tmp/rw.img /tmp/ro.img

# 3. virtio console: the guest's output goes to hvc0, multiplexed onto stdout with the UART
run_l2 qemu-hvc $Q -chardev stdio,id=con,mux=on -serial chardev:con \
  -device virtio-serial-device -device virtconsole,chardev=con \
  -append "$A rigout=hvc0 rigchecks=hvc"
l2_expect qemu-hvc hvc
l2_expect_text qemu-hvc hvc-seen RIG-HVC-HELLO
l2_expect_rc qemu-hvc 0

# 4. VFIO: the L1 NVMe controller assigned to L2 (vfio-pci, no vIOMMU); L2 must read the same
#    first MiB that L1 read through its own nvme driver before handing the device over.
if B=$(nvme_bdf) && [ -b /dev/nvme0n1 ]; then
  l1_sum=$(dd if=/dev/nvme0n1 bs=1M count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  if G=$(bind_vfio "$B"); then
    rig_pass qemu-vfio/bind "$B -> vfio-pci, group $G"
    run_l2 qemu-vfio $Q -serial stdio -device vfio-pci,host="$B" -append "$A rigchecks=nvme"
    l2_expect qemu-vfio nvme
    l2_expect_rc qemu-vfio 0
    l2_sum=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS nvme 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
    check_eq qemu-vfio/same-data "${l2_sum:-none}" "$l1_sum"
  else
    rig_fail qemu-vfio/bind "could not bind $B to vfio-pci"
  fi
  unbind_vfio "$B"
  i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -b /dev/nvme0n1 ]; then rig_pass qemu-vfio/release "$B back on the nvme driver after the VMM exited"
  else rig_fail qemu-vfio/release "/dev/nvme0n1 did not come back after unbinding $B from vfio-pci"; fi
else
  rig_fail qemu-vfio/bind "no NVMe controller with a namespace in L1"
fi

rig_finish
