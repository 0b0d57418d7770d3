# Part nbd: the kernel NBD client against `lightnvm serve` on the host (10.0.2.2:PORT).
# ext4 with a checksummed tree, e2fsck, disconnect; the host restarts the server (SIGTERM, a
# new process on the same image); reconnect, verify every checksum, e2fsck again.
. /vmtest/common.sh
set -u
HOST=10.0.2.2
PORT=$(arg vmtest_port)
DEV=/dev/nbd0
[ -n "$PORT" ] || fail "no vmtest_port on the kernel command line"

modprobe nbd nbds_max=2 || fail "modprobe nbd"
nbd_connect $HOST "$PORT" $DEV || fail "nbd-client could not connect to $HOST:$PORT"
SIZE=$(( $(cat /sys/block/nbd0/size) * 512 ))
say "connected: $((SIZE >> 20)) MiB"

$MKFS -q -t ext4 -F $DEV || fail "mkfs.ext4"
mount -t ext4 $DEV /mnt || fail "mount after mkfs"
make_tree /mnt || fail "writing the tree"
manifest /mnt >/tmp/manifest || fail "checksumming the tree"
FILES=$(wc -l </tmp/manifest)
KIB=$(du -sk /mnt | cut -f1)
sync
umount /mnt || fail "umount"
fsck_clean $DEV || fail "e2fsck -fn after writing"
nbd_disconnect $DEV || fail "nbd-client -d"
say "wrote $FILES files ($KIB KiB), e2fsck clean, disconnected"

# The host restarts the server now and answers in the share.
step "restart-server"
wait_for 120 test -s /share/restarted || fail "the host did not restart the server"
[ "$(cat /share/restarted)" = ok ] || fail "the host could not restart the server"
echo 3 >/proc/sys/vm/drop_caches

nbd_connect $HOST "$PORT" $DEV || fail "reconnect after the server restart"
mount -t ext4 $DEV /mnt || fail "mount after the restart"
verify_tree /mnt /tmp/manifest || fail "checksums differ after the server restart"
umount /mnt || fail "umount after verify"
fsck_clean $DEV || fail "e2fsck -fn after the restart"
nbd_disconnect $DEV || fail "nbd-client -d at the end"
info "$FILES files ($KIB KiB) checksummed, server restarted, all intact, e2fsck clean twice"
