#!/bin/bash
# `make demo`: boot the demo guest with lkvm and show what it sees.
#   arm64 host with /dev/kvm: lkvm runs right here.
#   anywhere else (x86_64): the nested rig boots an arm64 L1 with KVM under QEMU and lkvm runs there.
set -euo pipefail
RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG/.." && pwd)
BUILD=${BUILD:-build}
JOBS=${JOBS:-2}

make -C "$REPO" -s -j"$JOBS" BUILD="$BUILD" lkvm
LKVM=$REPO/$BUILD/arm64/lkvm
"$RIG/build.sh" >/dev/null

if [ "$(uname -m)" = aarch64 ] && [ -c /dev/kvm ]; then
  disk=$(mktemp --suffix=.img)
  trap 'rm -f "$disk"' EXIT
  truncate -s 64M "$disk"
  set -x
  "$LKVM" run -n demo -k "$RIG/out/Image" -i "$RIG/out/initrd-l2.cpio" -c 2 -m 256 -d "$disk" --rng \
    -p "console=ttyS0 quiet panic=-1 rigchecks=show,cpus,mem,rng rigcpus=2 rigmem=256"
  exit
fi

echo "demo: no arm64 KVM here; booting the nested rig (QEMU TCG → arm64 L1 with KVM → lkvm → L2)"
# Show lkvm's command, the guest's report and the verdicts; the full console is in out/l1-demo-l1.log.
set +e
LKVM_BIN=$LKVM "$RIG/run-l1.sh" "$RIG/demo-l1.sh" 2>&1 |
  grep --line-buffered -E '^demo:|RIG-L2-SHOW|RIG-CHECK|RIG-RESULT|^rig:' | sed -u 's/^  demo| //'
rc=${PIPESTATUS[0]}
echo "demo: full console output in $RIG/out/l1-demo-l1.log"
exit "$rc"
