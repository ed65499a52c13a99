# Runs in L1. lkvm --9p: an L2 guest mounts shares of L1 directories over virtio-9p (Debian's 9p,
# 9pnet_virtio modules). Proves: 8 MiB written in L2 reads back in L1 with the same sha256;
# symlinks planted in L1 (to /, absolute, relative out) and one swapped in by an L1 loop while the
# guest reads never expose L1's secret and nothing outside the share changes; ,ro refuses writes;
# the same share behind --viommu virtio with iommu.strict=1. Plus --9p usage errors.
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-300}

A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD"
SHARE=/tmp/p9share
RO=/tmp/p9ro
OUT=/tmp/p9outside

# --- 0. bad --9p values: one line, non-zero, no guest ----------------------------------------------------
rig_cli_error cli/9p-missing 'no such file' "$LKVM" run $K --9p /nonexistent/dir
rig_cli_error cli/9p-tag 'tag' "$LKVM" run $K --9p "/tmp,$(printf '%0300d' 0)"
echo not-a-dir >/tmp/p9file
rig_cli_error cli/9p-file 'not a directory' "$LKVM" run $K --9p /tmp/p9file,x
rm -f /tmp/p9file

# --- 1. the shares -----------------------------------------------------------------------------------------
rm -rf "$SHARE" "$RO" "$OUT"
mkdir -p "$SHARE/race" "$RO" "$OUT"
echo L1-SECRET >"$OUT/secret"
echo inside >"$SHARE/race/secret"
ln -s / "$SHARE/slash"
ln -s "$OUT" "$SHARE/abs"
ln -s ../p9outside "$SHARE/rel"
echo hello-ro >"$RO/hello"
# Names, sizes, modes, mtimes and contents (not `..`, whose mtime moves with /tmp).
out_state() { (cd "$OUT" && ls -l --full-time 2>/dev/null || ls -l; cat secret) | sha256sum | cut -d' ' -f1; }
ro_state() { (cd "$RO" && ls -l --full-time 2>/dev/null || ls -l; cat hello) | sha256sum | cut -d' ' -f1; }
out_before=$(out_state)
ro_before=$(ro_state)
root_before=$(ls / | sha256sum | cut -d' ' -f1)

# The racer: `race` flips between a directory holding "inside" and a symlink to $OUT while the
# guest reads race/secret.
touch /tmp/p9race.on
# Each state is held for a while (half the time a directory, half a symlink), which also leaves
# L1's CPUs to the VMM.
( cd "$SHARE" && while [ -e /tmp/p9race.on ]; do
    rm -rf race.d; mkdir race.d; echo inside >race.d/secret
    rm -rf race; mv race.d race
    sleep 0.05
    rm -rf race; ln -s "$OUT" race
    sleep 0.05
  done ) &
racer=$!

run_l2 p9 "$LKVM" run $K -c 1 -m 256 --name p9 --9p "$SHARE,share" --9p "$RO,roshare,ro" \
  -p "$A rigchecks=p9rw,p9escape,p9ro rigp9=share rigp9ro=roshare"
rm -f /tmp/p9race.on
wait "$racer" 2>/dev/null
l2_expect_boot p9
l2_expect p9 p9rw p9escape p9ro
l2_expect_rc p9 0

want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS p9rw 8MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
got=$(file_sha "$SHARE/l2-8m.bin" 2>/dev/null)
if [ -n "$want" ] && [ "$want" = "$got" ]; then rig_pass p9/l1-sha "L1 reads the guest's 8 MiB: sha256=$got"
else rig_fail p9/l1-sha "L1 file sha256 ${got:-missing}, guest wrote ${want:-nothing}"; fi
check_eq p9/l1-rename "$(cat "$SHARE/l2dir/b" 2>/dev/null)" renamed
check_eq p9/outside-untouched "$(out_state)" "$out_before"
check_eq p9/ro-untouched "$(ro_state)" "$ro_before"
check_eq p9/l1-root-untouched "$(ls / | sha256sum | cut -d' ' -f1)" "$root_before"
if grep -rqs GUEST-WAS-HERE "$OUT" /tmp/*/secret 2>/dev/null; then rig_fail p9/no-write-outside "GUEST-WAS-HERE found outside the share"
else rig_pass p9/no-write-outside "no guest write outside the share"; fi

# --- 2. the same share behind the virtio-iommu, strict invalidation ------------------------------------
rm -rf "$SHARE/l2-8m.bin" "$SHARE/l2dir"
run_l2 p9-viommu "$LKVM" run $K -c 1 -m 256 --name p9-viommu --9p "$SHARE,share" --viommu virtio \
  -p "$A iommu.strict=1 rigchecks=viommu,p9rw rigp9=share rigviommu=1"
l2_expect p9-viommu viommu p9rw
l2_expect_rc p9-viommu 0
want=$(tr -d '\r' <"$L2_LOG" | sed -n 's/.*RIG-CHECK PASS p9rw 8MiB sha256=\([0-9a-f]*\).*/\1/p' | head -n 1)
got=$(file_sha "$SHARE/l2-8m.bin" 2>/dev/null)
if [ -n "$want" ] && [ "$want" = "$got" ]; then rig_pass p9-viommu/l1-sha "L1 reads the guest's 8 MiB: sha256=$got"
else rig_fail p9-viommu/l1-sha "L1 file sha256 ${got:-missing}, guest wrote ${want:-nothing}"; fi

rm -rf "$SHARE" "$RO" "$OUT"
rig_finish
