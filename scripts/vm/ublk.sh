# Part ublk: `lightnvm serve IMAGE --ublk` inside the guest (image in tmpfs) -> /dev/ublkb0.
# ext4 with a checksummed tree, fstrim, e2fsck; SIGTERM (the server must flush and remove the
# device), a new server on the same image, every checksum verified, e2fsck again.
. /vmtest/common.sh
set -u
IMG=/tmp/ublk.img
DEV=/dev/ublkb0

modprobe ublk_drv || fail "modprobe ublk_drv"
wait_for 10 test -c /dev/ublk-control || fail "no /dev/ublk-control"
if lightnvm format --help 2>&1 | grep -q -- '--size'; then
    lightnvm format $IMG --size 256M >/tmp/format.log 2>&1 || { cat /tmp/format.log; fail "lightnvm format $IMG --size 256M"; }
else
    lightnvm format $IMG --preset small >/tmp/format.log 2>&1 || { cat /tmp/format.log; fail "lightnvm format $IMG --preset small"; }
fi
say "$(grep -iE 'export|capacity|GiB|MiB' /tmp/format.log | head -2 | tr '\n' ' ')"

SERVER=""
start_server() {
    lightnvm serve $IMG --ublk >>/tmp/serve.log 2>&1 &
    SERVER=$!
    _n=600
    until has_size ublkb0; do
        kill -0 $SERVER 2>/dev/null && [ $_n -gt 0 ] || { tail -20 /tmp/serve.log; fail "no $DEV from lightnvm serve --ublk"; }
        _n=$((_n - 1))
        sleep 0.2
    done
    wait_for 10 test -b $DEV || fail "$DEV is not a block device"
}
stop_server() {
    kill -TERM $SERVER
    wait $SERVER
    _rc=$?
    SERVER=""
    [ $_rc = 0 ] || { tail -20 /tmp/serve.log; fail "lightnvm serve --ublk exited $_rc after SIGTERM"; }
    wait_for 10 sh -c "! test -e $DEV" || fail "$DEV still exists after the server stopped"
}

start_server
say "$DEV: $(( $(cat /sys/block/ublkb0/size) / 2048 )) MiB, logical block $(cat /sys/block/ublkb0/queue/logical_block_size), discard max $(cat /sys/block/ublkb0/queue/discard_max_bytes)"
$MKFS -q -t ext4 -F $DEV || fail "mkfs.ext4 $DEV"
mount -t ext4 $DEV /mnt || fail "mount"
make_tree /mnt || fail "writing the tree"
# Some churn that fstrim then has to discard.
mkdir /mnt/tmp && head -c $((8 << 20)) /dev/urandom >/mnt/tmp/junk && sync && rm -r /mnt/tmp
manifest /mnt >/tmp/manifest || fail "checksumming the tree"
FILES=$(wc -l </tmp/manifest)
TRIM=$(/usr/sbin/fstrim -v /mnt) || fail "fstrim"
say "$TRIM"
sync
umount /mnt || fail "umount"
fsck_clean $DEV || fail "e2fsck -fn after writing"
stop_server
say "server stopped with SIGTERM, $DEV removed"

start_server
mount -t ext4 $DEV /mnt || fail "mount after the restart"
verify_tree /mnt /tmp/manifest || fail "checksums differ after the restart"
umount /mnt || fail "umount after verify"
fsck_clean $DEV || fail "e2fsck -fn after the restart"
stop_server
info "$FILES files checksummed, fstrim ($TRIM), SIGTERM + restart, all intact, e2fsck clean twice"
