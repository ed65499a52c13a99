#!/bin/bash
# `make demo`: boot the demo guest with lkvm and show what it sees.
#   anywhere but an arm64 host with /dev/kvm (x86_64): the nested rig boots an arm64 L1 with KVM,
#     SMMUv3 and an NVMe under QEMU; lkvm runs there (guest-images/demo-l1.sh) and assigns that NVMe
#     to the guest behind its virtio-iommu (--vfio-pci BDF --viommu vfio).
#   arm64 host with /dev/kvm: lkvm runs right here, with a disk and an rng. DEMO_VFIO_PCI=BDF (an
#     NVMe controller, e.g. 0000:01:00.0) assigns that NVMe as in the rig: it is bound to vfio-pci for
#     the run, the guest OVERWRITES 1 MiB at MiB 64 of its first namespace, and it is given back to
#     its driver afterwards. Refused if a namespace of it is mounted or in use.
set -euo pipefail
RIG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG/.." && pwd)
BUILD=${BUILD:-build}
JOBS=${JOBS:-2}

# show : the demo's lines (lkvm's command, the guest's report, the verdicts) from the console; an
# L1 re-report "RIG-CHECK PASS demo/X d" of the guest's own "RIG-CHECK PASS X d" and run_l2's
# echo of the command line are left out.
show() {
  grep --line-buffered -E '^demo:|RIG-L2-SHOW|RIG-CHECK|RIG-RESULT|^rig:' | sed -u 's/^  demo| //' |
    awk '/^rig: \[/ { next }
         /^RIG-CHECK PASS / { k = substr($0, 16); if (k ~ /^demo\// && (substr(k, 6) in seen)) next; seen[k] = 1 }
         { print; fflush() }'
}

# Progress on a cold cache: what is being built or fetched, how large, how far (build.sh's lines).
echo "demo: building lkvm ($BUILD/arm64/lkvm; the first build also fetches and builds arm64 libfdt and libslirp)"
# One line per ten files compiled (of how many), so a first build is never minutes of silence;
# compiler diagnostics pass through.
total=$(make -C "$REPO" -n BUILD="$BUILD" lkvm 2>/dev/null | grep -c -- ' -c .*\.cpp ' || true)
make -C "$REPO" -j"$JOBS" BUILD="$BUILD" lkvm 2>&1 |
  awk -v total="$total" '/ -c .*\.cpp / { n++; if (n % 10 == 0 || n == total) printf "demo: compiling lkvm: %d of %d files\n", n, total; fflush(); next }
                         /^make|^(ccache )?[a-z0-9_-]*(g\+\+|gcc|clang\+\+) |in statically linked applications|: in function |^guest-images\/|^W: Download is performed unsandboxed/ { next }
                         { print; fflush() }'
LKVM=$REPO/$BUILD/arm64/lkvm
echo "demo: the guest images (cached in ${XDG_CACHE_HOME:-$HOME/.cache}/lkvm-rig after the first run)"
"$RIG/build.sh" | sed -u -n 's/^build: /demo: /p'

if [ "$(uname -m)" = aarch64 ] && [ -c /dev/kvm ] && [ -n "${DEMO_VFIO_PCI:-}" ]; then
  B=$DEMO_VFIO_PCI
  case $B in ????:??:??.?) ;; ??:??.?) B=0000:$B ;; *) echo "demo: DEMO_VFIO_PCI=$B is not a PCI address (0000:01:00.0)" >&2; exit 2 ;; esac
  D=/sys/bus/pci/devices/$B
  [ -e "$D" ] || { echo "demo: no PCI device $B" >&2; exit 2; }
  [ "$(cat "$D/class")" = 0x010802 ] || { echo "demo: $B is not an NVMe controller (class $(cat "$D/class"))" >&2; exit 2; }
  # Every namespace block device of the controller: under it, or (NVMe multipath) the heads of its
  # subsystem. None may be mounted, used as swap or held by dm/md.
  for c in "$D"/nvme/nvme*; do
    [ -e "$c" ] || continue
    for ns in "$c"/nvme*n* /sys/class/nvme-subsystem/*/nvme*n*; do
      n=${ns##*/}
      case $n in *c*) continue ;; esac
      case $ns in /sys/class/nvme-subsystem/*) [ -e "${ns%/*}/${c##*/}" ] || continue ;; esac
      [ -e "/sys/block/$n" ] || continue
      if grep -q "^/dev/$n" /proc/mounts || grep -q "^/dev/$n" /proc/swaps ||
         ls "/sys/block/$n"/*/holders/* "/sys/block/$n"/holders/* >/dev/null 2>&1; then
        echo "demo: /dev/$n of $B is mounted or in use; pick a scratch NVMe" >&2; exit 2
      fi
    done
  done
  [ -d /sys/bus/pci/drivers/vfio-pci ] || modprobe vfio-pci
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "demo: assigning the NVMe $B to the guest (vfio-pci, behind lkvm's virtio-iommu)"
  set +e
  DEMO_VFIO_PCI=$B RIG_LIB=$REPO/tests/rig/lib.sh RIG_RESULTS=$work RIG_TALLY=$work/tally \
    L2_KERNEL=$RIG/out/Image L2_INITRD=$RIG/out/initrd-l2.cpio DEMO_DISK=$work/disk.img LKVM=$LKVM \
    sh "$RIG/demo-l1.sh" 2>&1 | show
  exit "${PIPESTATUS[0]}"
fi

if [ "$(uname -m)" = aarch64 ] && [ -c /dev/kvm ]; then
  disk=$(mktemp --suffix=.img)
  trap 'rm -f "$disk"' EXIT
  truncate -s 64M "$disk"
  set -x
  "$LKVM" run --name demo -k "$RIG/out/Image" -i "$RIG/out/initrd-l2.cpio" -c 2 -m 256 -d "$disk" --rng \
    -p "console=ttyS0 quiet panic=-1 rigchecks=show,cpus,mem,rng rigcpus=2 rigmem=256"
  exit
fi

echo "demo: no arm64 KVM here; booting the nested rig (QEMU TCG → arm64 L1 with KVM, SMMUv3, NVMe → lkvm → L2)"
# Show lkvm's command, the guest's report and the verdicts; the full console is in out/l1-demo-l1.log.
set +e
LKVM_BIN=$LKVM "$RIG/run-l1.sh" "$RIG/demo-l1.sh" 2>&1 | show
rc=${PIPESTATUS[0]}
echo "demo: full console output in $RIG/out/l1-demo-l1.log"
exit "$rc"
