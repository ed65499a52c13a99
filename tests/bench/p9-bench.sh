# Runs in L1 (guest-images/bench.sh starts it). virtio-9p bulk copy in L2: a P9MB MiB file (default
# 64) written into a share of an L1 tmpfs directory (dd bs=1M conv=fsync) and read back after the
# guest dropped its caches, through the page cache as mounted (write, read) and with O_DIRECT
# (dwrite, dread), via
#   lkvm    lkvm --9p DIR,share
#   qemu    Debian's QEMU, -fsdev local,security_model=passthrough + virtio-9p-pci
# both mounted by L2 as 9p2000.L over virtio with the same msize (P9MSIZE, default 524288; Linux
# caps it at its virtio transport's limit, net/9p/trans_virtio.c). Each configuration boots N times
# (default 1; alternating, so host noise hits both alike), each boot copies REPS times (default 1).
# Results are medians over all copies, in MB/s (1e6 bytes/s), and lkvm/qemu ratios; plus the 9P
# requests per MiB of each kind of transfer, traced in L2 (with Debian's 6.12 client: about 263,
# one per 4 KiB page, in every mode, so these figures measure 9P round trips rather than msize-
# sized transfers). Lines starting with RIG-BENCH are the
# results (copy: /mnt/results/p9-bench.txt).
# Environment: N, REPS, P9MB, P9MSIZE, CONFIGS (default "lkvm qemu").
. /mnt/rig/lib.sh

N=${N:-1}
REPS=${REPS:-1}
P9MB=${P9MB:-64}
P9MSIZE=${P9MSIZE:-524288}
CONFIGS=$(echo "${CONFIGS:-lkvm qemu}" | tr ',' ' ')
# Four transfers of P9MB MiB per rep, allowed to run as slowly as 0.2 MB/s: QEMU's 9p in a loaded
# rig ran at 0.3 and hit a fixed 700 s limit.
L2_TIMEOUT=${L2_TIMEOUT:-$((300 + REPS * P9MB * 20))}
DATA=/tmp/p9-bench.tsv
SPLIT=/tmp/p9-bench.split  # 9P requests per MiB, as the guest's client split the transfers
SHARE=/tmp/p9bench
: >"$DATA"; : >"$SPLIT"
bad=0

command -v lkvm >/dev/null 2>&1 || { echo "p9-bench: no lkvm in /mnt/bin; measuring QEMU only"; CONFIGS=$(echo "$CONFIGS" | tr ' ' '\n' | grep -v '^lkvm' | tr '\n' ' '); }

CHECKS="rigchecks=p9bench rigp9=share rigp9mb=$P9MB rigp9msize=$P9MSIZE rigreps=$REPS"

bench_run() {  # bench_run CONFIG I
  _cfg=$1 _tag=p9bench-$1-$2
  rm -rf "$SHARE"; mkdir -p "$SHARE"
  case $_cfg in
    lkvm)
      run_l2 "$_tag" lkvm run -k "$L2_KERNEL" -i "$L2_INITRD" -n none -c 1 -m 256 --name "$_tag" --9p "$SHARE,share" \
        -p "console=ttyS0 quiet panic=-1 $CHECKS" ;;
    qemu)
      run_l2 "$_tag" $(qemu_l2_base 1 256) -serial stdio \
        -fsdev "local,id=p9,path=$SHARE,security_model=passthrough" -device virtio-9p-pci,fsdev=p9,mount_tag=share \
        -append "console=ttyAMA0 quiet panic=-1 $CHECKS" ;;
    *) echo "p9-bench: unknown configuration '$_cfg' (lkvm, qemu)"; bad=1; return ;;
  esac
  tr -d '\r' <"$L2_LOG" | sed -n "s/^RIG-P9BENCH requests per MiB:/$_cfg/p" >>"$SPLIT"
  # Every transfer that completed counts, even when another one failed.
  tr -d '\r' <"$L2_LOG" | sed -n 's/^RIG-P9BENCH op=\([a-z]*\) .* mbps=\([0-9.]*\).*/\1 \2/p' |
    while read -r _op _mbps; do echo "$_cfg $_op $_mbps" >>"$DATA"; done
  if ! tr -d '\r' <"$L2_LOG" | grep -q '^RIG-CHECK PASS p9bench'; then
    echo "p9-bench: $_tag failed (rc=$L2_RC): $(tr -d '\r' <"$L2_LOG" | grep -m1 'RIG-CHECK FAIL' | cut -c1-160)"
    bad=1
  fi
}

bench_rounds "$N" $CONFIGS

med() { bench_median "$DATA" "$1" "$2"; }  # med CONFIG OP
msize=$(cat /tmp/l2-p9bench-*.log 2>/dev/null | tr -d '\r' | sed -n 's/^RIG-P9BENCH .* msize=\([0-9?]*\) .*/\1/p' | sort -u | tr '\n' ' ')

{
  echo "RIG-BENCH virtio-9p bulk copy in L2 (dd bs=1M, writes with fsync, reads after drop_caches; d = O_DIRECT), ${P9MB} MiB, share in L1 tmpfs, msize asked $P9MSIZE (got: ${msize:-?}); N=$N boots x $REPS reps; median MB/s"
  for c in $CONFIGS; do
    echo "RIG-BENCH p9 $c write=$(med "$c" write) read=$(med "$c" read) dwrite=$(med "$c" dwrite) dread=$(med "$c" dread) transfers=$(awk -v c="$c" '$1 == c' "$DATA" | wc -l)"
  done
  echo "RIG-BENCH p9 ratio lkvm/qemu" $(for op in write read dwrite dread; do echo "$op=$(ratio "$(med lkvm $op)" "$(med qemu $op)")"; done)
  sed 's/^/RIG-BENCH p9 9P requests per MiB (1 MiB dd, traced in L2): /' "$SPLIT"
  echo "RIG-BENCH raw: config op mbps"
  sed 's/^/RIG-BENCH raw: /' "$DATA"
} | tee /tmp/p9-bench.txt
cp /tmp/p9-bench.txt "$RIG_RESULTS/p9-bench.txt" 2>/dev/null
rm -rf "$SHARE"
exit $bad
