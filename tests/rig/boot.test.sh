# Runs in L1. The lkvm boot path: lkvm (from /mnt/bin, copied there by run-l1.sh) boots the L2
# kernel + busybox initramfs on KVM and the L2 init checks what the guest sees.
# The QEMU twin of this file is peer-qemu.test.sh (same L2 checks, Debian's QEMU as the VMM).
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-120}   # QEMU needs ~5 s for a plain boot here; a hang should not cost long

A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD"

# --- the command line interface (no guest may start) -------------------------------------------------
cli_ok() {  # cli_ok NAME PATTERN CMD... : exit 0 and output matching PATTERN
  _n=$1 _pat=$2; shift 2
  rig_capture 20 /tmp/cli.out "$@"; _rc=$?
  _out=$(cat /tmp/cli.out)
  if [ "$_rc" != 0 ]; then rig_fail "$_n" "exit status $_rc for '$*': $(printf '%s\n' "$_out" | grep -m1 . | cut -c1-160)"
  elif ! printf '%s\n' "$_out" | grep -qiE -- "$_pat"; then rig_fail "$_n" "output of '$*' does not match '$_pat'"
  else rig_pass "$_n" "$(printf '%s\n' "$_out" | grep -m1 . | cut -c1-100)"; fi
}

cli_ok cli/help 'run' "$LKVM" --help
cli_ok cli/version '[0-9]' "$LKVM" version
rig_cli_error cli/bad-flag 'bogus' "$LKVM" run $K --bogus
rig_cli_error cli/mem-zero '(-m|mem)' "$LKVM" run $K -m 0
rig_cli_error cli/missing-kernel '/nonexistent/Image' "$LKVM" run -k /nonexistent/Image -m 256 -c 1
rig_cli_error cli/vfio-bdf "--vfio-pci zz:00.0: not a PCI address.*DDDD:BB:DD.F" "$LKVM" run $K -m 256 --vfio-pci zz:00.0

# --- 1. plain boot: 2 vCPUs, 256 MiB, clean exit on poweroff; also --dump-dtb ---------------------------
run_l2 lkvm-basic "$LKVM" run $K -c 2 -m 256 --name rig-basic --console serial \
  -p "$A rigchecks=cpus,mem rigcpus=2 rigmem=256"
l2_expect_boot lkvm-basic
l2_expect lkvm-basic cpus mem
l2_expect_rc lkvm-basic 0
basic_booted=$L2_BOOT_S

# --dump-dtb may boot the guest afterwards or stop after writing; either way it must exit 0.
rm -f /tmp/rig.dtb
run_l2 lkvm-dtb "$LKVM" run $K -c 1 -m 128 --name rig-dtb --console serial --rng --dump-dtb /tmp/rig.dtb -p "$A"
magic=$(od -An -tx1 -N4 /tmp/rig.dtb 2>/dev/null | tr -d ' \n')
if [ "$magic" = d00dfeed ]; then rig_pass dtb/written "/tmp/rig.dtb, $(wc -c </tmp/rig.dtb) bytes, FDT magic"
else rig_fail dtb/written "no FDT in /tmp/rig.dtb (magic '${magic:-none}', lkvm rc=$L2_RC)"; fi
if grep -q 'virtio,mmio' /tmp/rig.dtb 2>/dev/null; then rig_pass dtb/virtio-mmio "virtio,mmio nodes present"
else rig_fail dtb/virtio-mmio "no 'virtio,mmio' compatible in the DTB of a guest with --rng"; fi
[ -f /tmp/rig.dtb ] && cp /tmp/rig.dtb "$RIG_RESULTS/lkvm.dtb" 2>/dev/null

# Later boots need a guest that boots at all; spare the time (and the noise) if it does not.
skip_if_no_boot() {  # skip_if_no_boot TAG CHECK... : true (and FAILs) when the plain boot failed
  [ -n "$basic_booted" ] && return 1
  _t=$1; shift
  for _c in "$@"; do rig_fail "$_t/$_c" "skipped: the plain boot (lkvm-basic) did not reach userspace"; done
  return 0
}

# --- 2. disks and rng: persistence across a guest reboot, a read-only disk, virtio-rng -----------------
if ! skip_if_no_boot lkvm-dev blkwrite blkpersist blkro rng exit blk-file ro-file-unchanged; then
  mkdisk /tmp/rw.img 16 zero
  mkdisk /tmp/ro.img 16 random
  ro_sum=$(file_sha /tmp/ro.img)
  run_l2 lkvm-dev "$LKVM" run $K -c 1 -m 256 --name rig-dev --console serial \
    -d /tmp/rw.img -d /tmp/ro.img,ro --rng -p "$A rigchecks=blkpersist,blkro,rng"
  l2_expect lkvm-dev blkwrite blkpersist blkro rng
  l2_expect_rc lkvm-dev 0
  want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS blkwrite 1MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
  got=$(dd if=/tmp/rw.img bs=1M skip=1 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -n "$want" ] && [ "$want" = "$got" ]; then rig_pass lkvm-dev/blk-file "the guest's payload is in the backing file"
  else rig_fail lkvm-dev/blk-file "backing file holds sha256 $got at 1MiB, guest wrote ${want:-nothing}"; fi
  check_eq lkvm-dev/ro-file-unchanged "$(file_sha /tmp/ro.img)" "$ro_sum"
  rm -f /tmp/rw.img /tmp/ro.img
fi

# --- 3. virtio console: with --console virtio the guest's output goes through hvc0 ----------------------
if ! skip_if_no_boot lkvm-hvc hvc hvc-seen exit; then
  run_l2 lkvm-hvc "$LKVM" run $K -c 1 -m 256 --name rig-hvc --console virtio \
    -p "$A rigout=hvc0 rigchecks=hvc"
  l2_expect lkvm-hvc hvc
  l2_expect_text lkvm-hvc hvc-seen RIG-HVC-HELLO
  l2_expect_rc lkvm-hvc 0
fi

rig_finish
