# Runs in L1. lkvm --9p: an L2 guest mounts shares of L1 directories over virtio-9p (Debian's 9p,
# 9pnet_virtio modules). Proves: 8 MiB written in L2 reads back in L1 with the same sha256;
# symlinks planted in L1 (to /, absolute, relative out) and one swapped in by an L1 loop while the
# guest reads never expose L1's secret and nothing outside the share changes; ,ro refuses writes;
# the same share behind --viommu virtio with iommu.strict=1. Plus --9p usage errors. And a hostile
# sandbox guest: no set-user-ID file in its workdir, L1's /proc, /run and other file systems sealed
# in the host-root share, a kmsg read that does not hold the VMM, no host lock from a ro share.
. /mnt/rig/lib.sh

rig_need_lkvm
L2_TIMEOUT=${L2_TIMEOUT:-300}

A="console=ttyS0 quiet panic=-1"
K="-k $L2_KERNEL -i $L2_INITRD -n none"  # -n none: no default user-mode NIC in the device sets counted here
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

# --- 3. a hostile guest against the shares' host side, in one sandbox boot ---------------------------------
# CMD runs chrooted in L1's / (read-only, one file system) with WORK read-write, and L1's /proc
# shared as hproc. It binds its / (the host-root share) to /tmp/h without the guest's own /proc,
# /sys, /dev mounted over it, and reports: whether a chmod u+s in WORK worked; what it reads of L1's /proc, /run and /mnt/rig (L1's
# rig share, another file system) through that; whether reading hproc's kmsg to its end returned
# (it must not block the VMM); and it takes a shared flock on L1's /p9-lockfile through the read-only
# root and holds it until L1 has looked at /proc/locks (no OFD lock may appear there).
WORK=/tmp/p9hostile
rm -rf "$WORK"
mkdir -p "$WORK"
echo lock-me >/p9-lockfile
cat >"$WORK/hostile.sh" <<'EOS'
cd "$(dirname "$0")"
echo payload >suid && chmod 4755 suid 2>/dev/null && echo "CHMOD-SUID ok" || echo "CHMOD-SUID refused"
mkdir -p /tmp/h && mount -o bind / /tmp/h || echo "BIND-ROOT failed"
for d in proc/1 run mnt/rig; do
  if ls /tmp/h/$d >/dev/null 2>&1; then echo "HOST-$d listed"; else echo "HOST-$d refused"; fi
done
cat /tmp/h/proc/1/environ >/dev/null 2>&1 && echo "HOST-ENVIRON read" || echo "HOST-ENVIRON refused"
mkdir -p /tmp/hp && mount -t 9p -o trans=virtio,version=9p2000.L,ro hproc /tmp/hp || echo "MOUNT-HPROC failed"
cat /tmp/hp/kmsg >/dev/null 2>&1; echo "KMSG returned $?"
if command -v flock >/dev/null; then
  flock -s /p9-lockfile sh -c 'echo held >locked; n=0; while [ ! -e checked ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done'
  echo "FLOCK done $?"
else echo "FLOCK missing"; fi
EOS
rm -f "$WORK/locked" "$WORK/checked" /tmp/p9locks.txt
( n=0; while [ ! -e "$WORK/locked" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
  cat /proc/locks >/tmp/p9locks.txt; touch "$WORK/checked" ) &
watcher=$!
rig_capture "$L2_TIMEOUT" /tmp/p9hostile.err sh -c 'exec "$@" >/tmp/p9hostile.out' sh \
  "$LKVM" sandbox $K --workdir "$WORK" --9p /proc,hproc,ro -- sh "$WORK/hostile.sh"
rc=$?
kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
sed 's/^/  hostile| /' /tmp/p9hostile.out /tmp/p9hostile.err | head -n 40
[ -d "$RIG_RESULTS" ] && cp /tmp/p9hostile.out /tmp/p9hostile.err /tmp/p9locks.txt "$RIG_RESULTS/" 2>/dev/null
check_eq p9-hostile/sandbox-rc "$rc" 0
mode=$(stat -c %a "$WORK/suid" 2>/dev/null)
if grep -q 'CHMOD-SUID refused' /tmp/p9hostile.out && [ "$mode" != 4755 ]; then
  rig_pass p9-hostile/no-setuid "chmod u+s refused in the guest; L1 sees mode ${mode:-none}"
else rig_fail p9-hostile/no-setuid "guest: $(grep CHMOD-SUID /tmp/p9hostile.out); L1 sees mode ${mode:-none}"; fi
for d in proc/1 run mnt/rig; do
  if grep -q "HOST-$d refused" /tmp/p9hostile.out; then rig_pass "p9-hostile/sealed-$d" "L1's /$d is not reachable through the host-root share"
  else rig_fail "p9-hostile/sealed-$d" "$(grep "HOST-$d" /tmp/p9hostile.out || echo 'no answer')"; fi
done
if grep -q 'HOST-ENVIRON refused' /tmp/p9hostile.out; then rig_pass p9-hostile/no-environ "L1's /proc/1/environ not readable"
else rig_fail p9-hostile/no-environ "$(grep HOST-ENVIRON /tmp/p9hostile.out || echo 'no answer')"; fi
if grep -q 'KMSG returned' /tmp/p9hostile.out; then rig_pass p9-hostile/kmsg-nonblocking "$(grep 'KMSG returned' /tmp/p9hostile.out): the VMM was not held"
else rig_fail p9-hostile/kmsg-nonblocking "no answer from a kmsg read (sandbox rc=$rc)"; fi
ino=$(stat -c %i /p9-lockfile)
if grep -q 'FLOCK missing' /tmp/p9hostile.out; then rig_log "p9-hostile/ro-lock: no flock in L1; not checked"
elif [ ! -s /tmp/p9locks.txt ] || ! grep -q 'FLOCK done 0' /tmp/p9hostile.out; then
  rig_fail p9-hostile/ro-lock "the guest's flock did not run as planned: $(grep FLOCK /tmp/p9hostile.out)"
elif grep -q ":$ino " /tmp/p9locks.txt; then rig_fail p9-hostile/ro-lock "L1 holds a lock for the guest: $(grep ":$ino " /tmp/p9locks.txt)"
else rig_pass p9-hostile/ro-lock "the guest held a shared flock on a ro-share file; L1's /proc/locks has none for it"; fi
rm -rf "$WORK" /p9-lockfile

rm -rf "$SHARE" "$RO" "$OUT"
rig_finish
