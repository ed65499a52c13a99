# Runs in L1. Page-table handover (iommu/page_tables.md): lkvm --viommu virtio,tables=on with our
# guest driver viommu_tables (guest-images/viommu-tables/) in the L2 initramfs, loaded in
# virtio-iommu's place when the kernel command line has rigtables=1. Four L2 boots:
#   1. strict (iommu.strict=1) and 2. lazy (iommu.strict=0, flush queue): the driver binds and
#      attaches a table per endpoint; virtio-blk writes and reads back 8 MiB, virtio-net gets an
#      address by DHCP and fetches 8 MiB from L1, virtio-9p copies 2 MiB in and out, the rng
#      reads; `lkvm stat` taken while the guest runs shows the domains in table mode with walks and
#      invalidations; the driver's test hook removes a mapping the DMA API still uses and the
#      device faults on it: an I/O error, not a read through a stale translation.
#   3. passthrough (iommu.passthrough=1) with bypass=0: identity domains attach to the device's
#      bypass domain, the disk works.
#   4. --viommu virtio without tables=on and rigtables=1: viommu_tables refuses to load, the stock
#      virtio_iommu driver has the device and the disk works behind it.
. /mnt/rig/lib.sh

rig_need_lkvm
# A strict table-mode boot with all its transfers took 232 s on a quiet host, over 240 s on a busy one.
L2_TIMEOUT=${L2_TIMEOUT:-420}
A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD"
if [ -n "${XDG_RUNTIME_DIR:-}" ]; then CTL_DIR=$XDG_RUNTIME_DIR/lkvm; else CTL_DIR=$HOME/.lkvm; fi
ip link set lo up 2>/dev/null

mkdisk /tmp/vt-disk.img 32 zero
mkdisk /tmp/vt-netblob 8 urandom
NET_SHA=$(file_sha /tmp/vt-netblob)
NET_BYTES=$((8 * 1024 * 1024))
NET_PORT=5100
SHARE=/tmp/vt-share

# stat_when TAG TEXT FILE : once the L2 log shows TEXT, `lkvm stat TAG` into FILE (the guest sleeps
# after its checks: rigsleep below). Runs in the background next to run_l2; gives up when
# /tmp/vt-done-TAG appears (the VMM is gone).
stat_when() {
  rm -f "/tmp/vt-done-$1"
  (
    while [ ! -e "/tmp/vt-done-$1" ] && ! grep -q "$2" "/tmp/l2-$1.log" 2>/dev/null; do sleep 0.1; done
    [ -e "/tmp/vt-done-$1" ] || rig_capture 10 "$3" "$LKVM" stat "$1"
  ) &
  STAT_JOB=$!
}

# tables_case TAG OFF TYPE CMDLINE... : one table-mode boot, all checks; TYPE is the expected IOMMU
# group type (DMA strict, DMA-FQ lazy).
TABLE_CHECKS=viommu,tables,iommumode,blkrw,netdhcp,netfetch,p9rw,rng,tablesfault
tables_case() {
  _t=$1 _off=$2 _type=$3; shift 3
  rm -rf "$SHARE"; mkdir -p "$SHARE"
  timeout "$L2_TIMEOUT" nc -l -p "$NET_PORT" </tmp/vt-netblob >/dev/null 2>&1 &
  _serve=$!
  stat_when "$_t" "RIG-CHECK [A-Z]* tablesfault" "/tmp/vt-stat-$_t.txt"
  run_l2 "$_t" "$LKVM" run $K -c 1 -m 256 --name "$_t" --console serial --viommu virtio,tables=on \
    -d /tmp/vt-disk.img --rng -n mode=user --9p "$SHARE,share" \
    -p "$A $* rigtables=1 rigchecks=$TABLE_CHECKS rigviommu=4 rigiommutype=$_type rigblkoff=$_off rigblkmb=8 rigp9=share rigp9rwmb=2 rignetip=10.0.2.15 rignetsrc=10.0.2.2:$NET_PORT rignetsha=$NET_SHA rignetbytes=$NET_BYTES rigsleep=6"
  touch "/tmp/vt-done-$_t"
  wait "$STAT_JOB" 2>/dev/null
  rm -f "/tmp/vt-done-$_t"
  kill "$_serve" 2>/dev/null
  wait "$_serve" 2>/dev/null
  l2_expect_boot "$_t"
  l2_expect "$_t" $(echo "$TABLE_CHECKS" | tr , ' ')
  l2_expect_rc "$_t" 0
  # What the guest wrote is where it wrote it: the disk's backing file and the 9p share.
  _want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS blkrw 8MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
  _got=$(dd if=/tmp/vt-disk.img bs=1M skip="$_off" count=8 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -n "$_want" ] && [ "$_want" = "$_got" ]; then rig_pass "$_t/blk-file" "backing file holds the guest's 8 MiB at MiB $_off"
  else rig_fail "$_t/blk-file" "backing file sha256 $_got at MiB $_off, guest wrote ${_want:-nothing}"; fi
  _want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS p9rw 2MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
  _got=$(file_sha "$SHARE/l2-8m.bin" 2>/dev/null)
  if [ -n "$_want" ] && [ "$_want" = "$_got" ]; then rig_pass "$_t/p9-file" "the share holds the guest's 2 MiB"
  else rig_fail "$_t/p9-file" "share file sha256 ${_got:-missing}, guest wrote ${_want:-nothing}"; fi
  tables_stat "$_t" "/tmp/vt-stat-$_t.txt"
}

# tables_stat TAG FILE : lkvm stat shows every domain in table mode (CONFORMANCE.md D64), with walks,
# invalidations (inv_domain/inv_asid/inv_range) and, from tablesfault, a fault (D69).
tables_stat() {
  _s=$2
  [ -s "$_s" ] && sed "s/^/  stat $1| /" "$_s" && cp "$_s" "$RIG_RESULTS/" 2>/dev/null
  _doms=$(grep -c '^domain [0-9]* ' "$_s" 2>/dev/null)
  _tables=$(grep -c '^domain [0-9]* .*mode=table' "$_s" 2>/dev/null)
  _walks=$(sed -n 's/^domain [0-9]* .*[ ]walks=\([0-9]*\).*/\1/p' "$_s" | awk '{ t += $1 } END { print t + 0 }')
  _inv=$(grep '^domain [0-9]* ' "$_s" | tr ' ' '\n' | sed -n 's/^inv_[a-z]*=\([0-9]*\)$/\1/p' | awk '{ t += $1 } END { print t + 0 }')
  _faults=$(sed -n 's/^domain [0-9]* .*[ ]faults=\([0-9]*\).*/\1/p' "$_s" | awk '{ t += $1 } END { print t + 0 }')
  if [ ! -s "$_s" ]; then rig_fail "$1/stat-tables" "no lkvm stat output while the guest ran"
  elif [ "${_tables:-0}" -lt 4 ] || [ "$_tables" != "$_doms" ]; then
    rig_fail "$1/stat-tables" "$_tables of $_doms domains in table mode (want 4 of 4): $(grep '^domain' "$_s" | head -n 2 | tr '\n' '|')"
  elif [ "$_walks" -lt 1 ] || [ "$_inv" -lt 1 ]; then rig_fail "$1/stat-tables" "walks=$_walks invalidations=$_inv"
  else rig_pass "$1/stat-tables" "$_tables domains in table mode, walks=$_walks invalidations=$_inv faults=$_faults"; fi
  if [ "${_faults:-0}" -ge 1 ]; then rig_pass "$1/stat-fault" "lkvm counted $_faults translation faults"
  else rig_fail "$1/stat-fault" "lkvm counted no translation fault ($(grep '^domain' "$_s" | head -n 1))"; fi
}

# VT_CASES picks boots for a targeted run (default: all four; commas or spaces between names).
VT_CASES=$(echo "${VT_CASES:-strict lazy pt off}" | tr ',' ' ')
case " $VT_CASES " in *" strict "*) tables_case viommu-tables-strict 0 DMA iommu.strict=1 ;; esac
case " $VT_CASES " in *" lazy "*) tables_case viommu-tables-lazy 8 DMA-FQ iommu.strict=0 ;; esac

# --- 3. passthrough (iommu.passthrough=1): identity domains are the device's bypass domain -------------
case " $VT_CASES " in *" pt "*)
run_l2 viommu-tables-pt "$LKVM" run $K -c 1 -m 256 --name viommu-tables-pt --console serial --viommu virtio,tables=on,bypass=0 \
  -d /tmp/vt-disk.img -n none -p "$A iommu.passthrough=1 rigtables=1 rigchecks=viommu,iommumode,blkrw rigviommu=1 rigiommutype=identity rigblkoff=24"
l2_expect_boot viommu-tables-pt
l2_expect viommu-tables-pt viommu iommumode blkrw
l2_expect_rc viommu-tables-pt 0
;; esac

# --- 4. no tables=on: the module stays out, the stock driver works -------------------------------------
case " $VT_CASES " in *" off "*)
run_l2 viommu-tables-off "$LKVM" run $K -c 1 -m 256 --name viommu-tables-off --console serial --viommu virtio \
  -d /tmp/vt-disk.img --rng -n none -p "$A iommu.strict=1 rigtables=1 rigchecks=notables,viommu,iommumode,blkrw rigviommu=2 rigiommutype=DMA rigblkoff=16"
l2_expect_boot viommu-tables-off
l2_expect viommu-tables-off notables viommu iommumode blkrw
l2_expect_rc viommu-tables-off 0
;; esac

rm -rf /tmp/vt-disk.img /tmp/vt-netblob "$SHARE"
[ -e "$CTL_DIR/viommu-tables-strict.sock" ] && rig_fail viommu-tables/no-socket "socket left behind"
rig_finish
