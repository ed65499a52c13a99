# The demo, run inside L1 by guest-images/demo.sh: lkvm boots the L2 guest on real KVM with a
# disk and an rng, and the guest prints what it sees. (Busybox sh; lkvm is /mnt/bin/lkvm.)
. /mnt/rig/lib.sh
DISK=/tmp/demo-disk.img
dd if=/dev/zero of=$DISK bs=1M count=64 2>/dev/null
CMD="lkvm run -n demo -k $L2_KERNEL -i $L2_INITRD -c 2 -m 256 -d $DISK --rng"
echo "demo: $CMD -p \"console=ttyS0 quiet panic=-1 rigchecks=show,cpus,mem,rng,blkpersist ...\""
run_l2 demo $CMD -p "console=ttyS0 quiet panic=-1 rigchecks=show,cpus,mem,rng,blkpersist rigcpus=2 rigmem=256"
l2_expect demo show cpus mem rng blkwrite blkpersist
l2_expect_rc demo 0
rig_finish
