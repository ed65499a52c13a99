# Runs in L1. lkvm --viommu virtio: the guest's own virtio-iommu driver controls the DMA of the
# emulated virtio-mmio devices. One L1 boot, several L2 runs: no vIOMMU, then --viommu virtio with
# the guest in strict (iommu.strict=1), lazy (iommu.strict=0) and passthrough (iommu.passthrough=1,
# bypass domains) mode, with bypass=0, and with the virtio console behind it too. Each run writes
# and reads back a disk with O_DIRECT (checksums, also against the backing file), reads the rng and
# reports the IOMMU groups' domain type. Plus --viommu errors and --dump-dtb.
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-150}

A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD"

# --- 0. bad --viommu values: one line, non-zero, no guest --------------------------------------------
rig_cli_error cli/viommu-bypass 'bypass' "$LKVM" run $K --viommu virtio,bypass=2
rig_cli_error cli/viommu-kind "unknown device kind" "$LKVM" run $K --viommu pci
rig_cli_error cli/viommu-granule 'page_size' "$LKVM" run $K --viommu page_size=0x100000

mkdisk /tmp/vrw.img 32 zero
mkdisk /tmp/vro.img 16 random
ro_sum=$(file_sha /tmp/vro.img)

# --- 1. the device tree: #iommu-cells on the virtio-iommu, iommus = <&viommu 0x10000+slot> -------------
rm -f /tmp/viommu.dtb
rig_capture 30 /tmp/dtb.out "$LKVM" run $K -m 128 --viommu virtio -d /tmp/vrw.img -d /tmp/vro.img,ro --rng \
  --dump-dtb /tmp/viommu.dtb -p "$A"
[ -f /tmp/viommu.dtb ] && cp /tmp/viommu.dtb "$RIG_RESULTS/viommu.dtb" 2>/dev/null
if command -v dtc >/dev/null 2>&1; then
  dtc -I dtb -O dts -o /tmp/viommu.dts /tmp/viommu.dtb 2>/tmp/dtc.err
  cells=$(grep -c '#iommu-cells = <0x01>' /tmp/viommu.dts)
  eps=$(sed -n 's/.*iommus = <\(0x[0-9a-f]*\) \(0x[0-9a-f]*\)>.*/\2/p' /tmp/viommu.dts | tr '\n' ' ')
  check_eq dtb/iommu-cells "$cells" 1
  check_eq dtb/endpoints "$eps" "0x10001 0x10002 0x10003 "
else
  # No dtc in L1: property names live once in the DTB's strings block.
  if grep -q '#iommu-cells' /tmp/viommu.dtb && grep -q 'iommus' /tmp/viommu.dtb; then
    rig_pass dtb/iommu-props "#iommu-cells and iommus in the DTB (no dtc in L1)"
  else rig_fail dtb/iommu-props "no #iommu-cells/iommus in /tmp/viommu.dtb"; fi
fi

# --- 2. L2 runs ------------------------------------------------------------------------------------------
# run_case TAG OFF TYPE EXTRA-LKVM-ARGS... -- EXTRA-CMDLINE: blkrw at MiB OFF, blkro, rng, iommumode
# with rigiommutype=TYPE, viommu when TYPE is not none; the backing file must hold what the guest wrote.
run_case() {
  _t=$1 _off=$2 _type=$3; shift 3
  _args=""
  while [ $# -gt 0 ] && [ "$1" != -- ]; do _args="$_args $1"; shift; done
  shift
  _checks=blkrw,blkro,rng,iommumode
  [ "$_type" = none ] || _checks=viommu,$_checks
  run_l2 "$_t" "$LKVM" run $K -c 1 -m 256 --name "$_t" --console serial -d /tmp/vrw.img -d /tmp/vro.img,ro --rng $_args \
    -p "$A $* rigchecks=$_checks rigblkoff=$_off rigiommutype=$_type rigviommu=3"
  l2_expect_boot "$_t"
  [ "$_type" = none ] || l2_expect "$_t" viommu
  l2_expect "$_t" blkrw blkro rng iommumode
  l2_expect_rc "$_t" 0
  _want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS blkrw 4MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
  _got=$(dd if=/tmp/vrw.img bs=1M skip="$_off" count=4 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -n "$_want" ] && [ "$_want" = "$_got" ]; then rig_pass "$_t/blk-file" "backing file holds the guest's 4 MiB at MiB $_off"
  else rig_fail "$_t/blk-file" "backing file sha256 $_got at MiB $_off, guest wrote ${_want:-nothing}"; fi
}

run_case viommu-none 0 none --
run_case viommu-strict 4 DMA --viommu virtio --debug -- iommu.strict=1
# The --debug run logs each endpoint and, at exit, the model's counters and mappings.
l2_expect_text viommu-strict debug-endpoint "is endpoint 0x10001"
run_case viommu-lazy 8 DMA-FQ --viommu virtio -- iommu.strict=0
run_case viommu-passthrough 12 identity --viommu virtio -- iommu.passthrough=1
# Without boot bypass nothing reaches memory until the driver attaches it: the load order matters.
run_case viommu-nobypass 16 DMA --viommu virtio,bypass=0 -- iommu.strict=1
check_eq viommu/ro-file-unchanged "$(file_sha /tmp/vro.img)" "$ro_sum"

# --- 3. the virtio console behind the vIOMMU too (4 endpoints), output through hvc0 ---------------------
run_l2 viommu-hvc "$LKVM" run $K -c 1 -m 256 --name viommu-hvc --console virtio -d /tmp/vrw.img --rng --viommu \
  -p "$A rigout=hvc0 rigchecks=viommu,hvc,blkrw,rng,iommumode rigblkoff=20 rigviommu=3 rigiommutype=DMA"
l2_expect_boot viommu-hvc
l2_expect viommu-hvc viommu hvc blkrw rng iommumode
l2_expect_text viommu-hvc hvc-seen RIG-HVC-HELLO
l2_expect_rc viommu-hvc 0

# --- 4. a guest reboot rebuilds the machine: the vIOMMU comes back with its boot state (bypass=0
#        here, so nothing would work after the reset unless the driver attaches everything again) ---------
run_l2 viommu-reboot "$LKVM" run $K -c 1 -m 256 --name viommu-reboot --console serial -d /tmp/vrw.img --viommu virtio,bypass=0 \
  -p "$A rigchecks=viommu,blkpersist rigviommu=1"
l2_expect viommu-reboot viommu blkwrite blkpersist
l2_expect_rc viommu-reboot 0

rm -f /tmp/vrw.img /tmp/vro.img
rig_finish
