#!/usr/bin/env bash
# Real NBD clients against `lightnvm serve`: nbdinfo, qemu-img, qemu-io, nbdcopy, fio, a real
# ext4 through nbdfuse + a loop device, SIGTERM, kill -9 with flushed data verified, and bit
# rot in an image read back by libnbd.
# Needs: libnbd-bin (nbdinfo, nbdcopy, nbdfuse), python3-libnbd (scripts/backup.py), qemu-utils,
# fio, fuse3, e2fsprogs, util-linux.
# Run by scripts/test.sh after the release build; prints "N passed, 0 failed" at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
B="$PWD/target/release/lightnvm"
W="$(mktemp -d /tmp/lightnvm-nbd-XXXXXX)"
PORT=$((20000 + RANDOM % 20000))
U="nbd://127.0.0.1:$PORT"
SERVER=""
PASSED=0

cleanup() {
    set +e
    mountpoint -q "$W/fs" && umount "$W/fs"
    mountpoint -q "$W/small" && umount "$W/small"
    [[ -n "${LOOP:-}" ]] && losetup -d "$LOOP" 2>/dev/null
    mountpoint -q "$W/mnt" && (fusermount3 -u "$W/mnt" 2>/dev/null || umount -l "$W/mnt")
    [[ -n "$SERVER" ]] && kill -9 "$SERVER" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "  ok: $*"; }
fail() { echo "FAILED: $*" >&2; [[ -f "$W/serve.log" ]] && tail -20 "$W/serve.log" >&2; echo "$PASSED passed, 1 failed"; exit 1; }

start_server() {
    "$B" serve "${IMG:-$W/img}" --listen "127.0.0.1:$PORT" --socket "$W/sock" "$@" >"$W/serve.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do
        nbdinfo "$U" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER" 2>/dev/null || fail "server exited at start"
        sleep 0.1
    done
    fail "server did not come up"
}

stop_server() {
    kill -TERM "$SERVER"
    local rc=0
    wait "$SERVER" || rc=$?
    SERVER=""
    [[ $rc -eq 0 ]] || fail "server exited $rc after SIGTERM"
    grep -q "stopped cleanly" "$W/serve.log" || fail "no clean stop in the log"
}

echo "== real NBD clients (work dir $W, $U)"
"$B" format "$W/img" --preset default >/dev/null
start_server
SIZE=$(nbdinfo --size "$U")

# nbdinfo --json: size, block sizes, flags; also over the unix socket.
nbdinfo --json "$U" >"$W/info.json"
python3 - "$W/info.json" "$SIZE" <<'EOF' || fail "nbdinfo --json"
import json, sys
info = json.load(open(sys.argv[1]))
e = info["exports"][0]
assert e["export-size"] == int(sys.argv[2]) and e["export-size"] > 900 << 20, e
assert (e["block_size_minimum"], e["block_size_preferred"], e["block_size_maximum"]) == (512, 4096, 32 << 20), e
for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
    assert e[flag] is True, flag
assert e["is_read_only"] is False
assert "up to 32768 KiB are atomic" in e["description"], e
EOF
ok "nbdinfo --json: size $SIZE, block sizes 512/4096/32M, flush/fua/trim/zero/multi-conn, atomic writes in the description"
[[ "$(nbdinfo --size "nbd+unix:///?socket=$W/sock")" == "$SIZE" ]] || fail "unix socket"
ok "unix socket export"

# Block status (base:allocation) and structured reads with holes: what was never written,
# trimmed or zeroed is a hole; tools skip it.
nbdinfo --map --json "$U" >"$W/map0.json"
qemu-io -f raw -c "write -P 7 1M 64k" -c "write -P 9 8M 4k" -c "write -P 5 16M 8k" \
    -c "discard 16M 8k" "$U" >/dev/null || fail "qemu-io writes for the map"
nbdinfo --map --json "$U" >"$W/map1.json"
qemu-img map --output=json -f raw "$U" >"$W/qmap.json"
nbdcopy "$U" "$W/sparse.raw"
python3 - "$W" "$SIZE" <<'EOF' || fail "block status / sparse copy"
import json, os, sys
w, size = sys.argv[1], int(sys.argv[2])
M = 1 << 20
hole = lambda e: e["type"] & 1 == 1
m0 = json.load(open(f"{w}/map0.json"))
assert [(e["offset"], e["length"], hole(e)) for e in m0] == [(0, size, True)], m0
m1 = [(e["offset"], e["length"], hole(e)) for e in json.load(open(f"{w}/map1.json"))]
want = [(0, M, True), (M, 64 << 10, False), (M + (64 << 10), 7 * M - (64 << 10), True),
        (8 * M, 4096, False), (8 * M + 4096, size - 8 * M - 4096, True)]
assert m1 == want, m1
q = [(e["start"], e["length"], e["data"]) for e in json.load(open(f"{w}/qmap.json"))]
assert q == [(o, l, not h) for (o, l, h) in want], q
st = os.stat(f"{w}/sparse.raw")
assert st.st_size == size and st.st_blocks * 512 < 2 * M, (st.st_size, st.st_blocks)
with open(f"{w}/sparse.raw", "rb") as f:
    f.seek(M); assert f.read(64 << 10) == b"\x07" * (64 << 10)
    f.seek(8 * M); assert f.read(4096) == b"\x09" * 4096
    f.seek(16 * M); assert f.read(8192) == bytes(8192)
EOF
ok "block status: nbdinfo --map and qemu-img map show exactly the written extents (a trimmed one is a hole again); nbdcopy makes a sparse copy ($(du -k "$W/sparse.raw" | cut -f1) KiB of $((SIZE >> 20)) MiB) with the data intact"

# qemu-img convert of a random raw file into the (fresh, zero) export; qemu-img compare.
head -c $((48 << 20)) /dev/urandom >"$W/r.raw"
qemu-img convert -n -f raw -O raw "$W/r.raw" "$U"
qemu-img compare -f raw -F raw "$W/r.raw" "$U" >/dev/null || fail "qemu-img compare"
ok "qemu-img convert + compare (48 MiB): identical"

# qemu-io: patterns at many offsets, 512-byte aligned ones too (read-modify-write).
BASE=$((64 << 20))
CMDS=()
i=0
for off in 0 512 4096 4608 8191 12288 65024 1048064 3145728; do
    off=$(( (off / 512) * 512 ))
    len=$(( (i % 3 + 1) * 1536 ))
    pat=$(( 0x11 + i * 7 ))
    CMDS+=(-c "write -P $pat $((BASE + off * 64)) $len")
    i=$((i + 1))
done
i=0
for off in 0 512 4096 4608 8191 12288 65024 1048064 3145728; do
    off=$(( (off / 512) * 512 ))
    len=$(( (i % 3 + 1) * 1536 ))
    pat=$(( 0x11 + i * 7 ))
    CMDS+=(-c "read -P $pat $((BASE + off * 64)) $len")
    i=$((i + 1))
done
out=$(qemu-io -f raw "$U" "${CMDS[@]}" -c flush 2>&1)
if grep -qiE "fail|error|mismatch" <<<"$out"; then echo "$out" >&2; fail "qemu-io patterns"; fi
[[ $(grep -c "^read " <<<"$out") -eq 9 ]] || fail "qemu-io read count"
ok "qemu-io: 9 pattern writes at 512-aligned offsets read back verified"

# nbdcopy 64 MiB in and out.
head -c $((64 << 20)) /dev/urandom >"$W/in.raw"
nbdcopy "$W/in.raw" "$U"
nbdcopy "$U" "$W/out.raw"
cmp -n $((64 << 20)) "$W/in.raw" "$W/out.raw" || fail "nbdcopy round trip"
rm -f "$W/out.raw" "$W/r.raw"
ok "nbdcopy 64 MiB in and out: identical"

# fio with the nbd engine: random writes, then verified reads, several jobs.
fio --name=lnvm --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --size=32m --numjobs=3 \
    --offset_increment=40m --offset=200m --iodepth=16 --verify=crc32c --do_verify=1 \
    --group_reporting --output="$W/fio.txt" || fail "fio"
grep -q "err= 0" "$W/fio.txt" || { cat "$W/fio.txt" >&2; fail "fio reported errors"; }
# Random reads of the same data in a separate run: fio re-reads and verifies only.
fio --name=lnvm --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --size=32m --numjobs=3 \
    --offset_increment=40m --offset=200m --iodepth=16 --verify=crc32c --verify_only \
    --group_reporting --output="$W/fio2.txt" || fail "fio verify_only"
grep -q "err= 0" "$W/fio2.txt" || { cat "$W/fio2.txt" >&2; fail "fio verify_only reported errors"; }
grep -q "READ:" "$W/fio2.txt" || fail "fio verify_only did not read"
ok "fio nbd engine: 3 jobs randwrite + crc32c verify, then a separate verifying read run, no errors"

# A real filesystem: nbdfuse exposes the export as a file; a loop device; ext4.
mkdir -p "$W/mnt" "$W/fs"
nbdfuse "$W/mnt" "$U" &
for _ in $(seq 50); do [[ -e "$W/mnt/nbd" ]] && break; sleep 0.1; done
[[ -e "$W/mnt/nbd" ]] || fail "nbdfuse"
LOOP=$(losetup -f --show "$W/mnt/nbd")
mkfs.ext4 -q -F "$LOOP"
mount "$LOOP" "$W/fs"
mkdir -p "$W/fs/tree"
cp -a crates docs scripts "$W/fs/tree/"
cp -a /usr/share/doc/e2fsprogs /usr/share/doc/fio "$W/fs/tree/" 2>/dev/null || true
sync
umount "$W/fs"
e2fsck -fn "$LOOP" >"$W/fsck.txt" 2>&1 || { cat "$W/fsck.txt" >&2; fail "e2fsck after writing"; }
losetup -d "$LOOP"; LOOP=""
fusermount3 -u "$W/mnt" 2>/dev/null || umount "$W/mnt"
ok "ext4 through nbdfuse + loop: tree copied, e2fsck -fn clean"

# SIGTERM: clean stop; a fresh server process reads the same tree back.
stop_server
ok "SIGTERM: requests finished, flushed, checkpointed, exit 0"
start_server
grep -q "(clean)" "$W/serve.log" || fail "reopen after SIGTERM was not clean"
nbdfuse "$W/mnt" "$U" &
for _ in $(seq 50); do [[ -e "$W/mnt/nbd" ]] && break; sleep 0.1; done
LOOP=$(losetup -f --show -r "$W/mnt/nbd")
e2fsck -fn "$LOOP" >"$W/fsck.txt" 2>&1 || { cat "$W/fsck.txt" >&2; fail "e2fsck after restart"; }
mount -o ro "$LOOP" "$W/fs"
diff -r "$W/fs/tree/crates" crates >/dev/null || fail "tree differs after restart"
diff -r "$W/fs/tree/docs" docs >/dev/null || fail "docs differ after restart"
umount "$W/fs"
losetup -d "$LOOP"; LOOP=""
fusermount3 -u "$W/mnt" 2>/dev/null || umount "$W/mnt"
ok "restart: e2fsck clean, the tree reads back identical"

# kill -9 during a write workload with flushes: all flushed data survives.
head -c $((16 << 20)) /dev/urandom >"$W/flushed.raw"
qemu-img convert -n -f raw -O raw "$W/flushed.raw" "$U"   # qemu-img flushes before it exits
fio --name=bg --ioengine=nbd --uri="$U" --rw=randwrite --bs=16k --size=256m --offset=300m \
    --iodepth=16 --time_based --runtime=30 --fsync=64 >/dev/null 2>&1 &
FIO=$!
sleep 2
kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
wait "$FIO" 2>/dev/null || true
"$B" check "$W/img" --quick >"$W/check.txt" || { cat "$W/check.txt" >&2; fail "check after kill -9"; }
start_server
grep -q "recovered after a crash" "$W/serve.log" || fail "no crash recovery after kill -9"
nbdcopy "$U" "$W/out.raw"
cmp -n $((16 << 20)) "$W/out.raw" "$W/flushed.raw" || fail "flushed data lost after kill -9"
rm -f "$W/out.raw"
stop_server
ok "kill -9 during writes: check clean, recovery replayed, flushed 16 MiB intact"

# Changed-block tracking and incremental backup with real clients: a random pattern, a mark,
# a full copy; then three rounds of writes and trims with GC active (the device is overwritten
# twice) and a kill -9 in each, each followed by a new mark and an increment since the previous
# mark (scripts/backup.py: libnbd, qemu:dirty-bitmap:NAME). The full copy plus the increments
# must equal the live export every time; the dirty bitmap agrees with `lightnvm changed`.
IMG="$W/cbt.img"
"$B" format "$IMG" --preset small >/dev/null
start_server
CSIZE=$(nbdinfo --size "$U")
head -c "$CSIZE" /dev/urandom >"$W/pattern.raw"
nbdcopy --flush "$W/pattern.raw" "$U" || fail "cbt: pattern"
"$B" mark create "$IMG" m0 >/dev/null || fail "cbt: mark m0"
./scripts/backup.py full "$U" "$W/full.raw" >/dev/null || fail "cbt: full backup"
cmp "$W/full.raw" "$W/pattern.raw" || fail "cbt: the full copy differs from the pattern"
INCS=()
for round in 1 2 3; do
    prev="m$((round - 1))"
    # Random writes into a quarter of the full device for 2.5 s (several capacities: GC
    # relocates constantly; the other quarters stay unchanged), trims, a kill -9 mid-way.
    QUARTER=$((CSIZE / 4 / 4096 * 4096))
    fio --name=cbt --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --offset=$(((round - 1) * QUARTER)) \
        --size="$QUARTER" --time_based --runtime=30 --iodepth=8 --fsync=256 \
        --randseed=$round >/dev/null 2>&1 &
    FIO=$!
    sleep 1.5
    qemu-io -f raw -c "discard $((round * 8))M 1M" -c "write -z $((round * 8 + 2))M 64k" "$U" \
        >/dev/null || fail "cbt: trims"
    sleep 1
    kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    wait "$FIO" 2>/dev/null || true
    start_server
    grep -q "recovered after a crash" "$W/serve.log" || fail "cbt: no crash recovery in round $round"
    # More changes after the restart, then the mark that ends this round.
    qemu-io -f raw -c "write -P $round $((round * 5))M 256k" -c "discard $((round * 3))M 128k" \
        "$U" >/dev/null || fail "cbt: writes after restart"
    "$B" mark create "$IMG" "m$round" >/dev/null || fail "cbt: mark m$round"
    ./scripts/backup.py incr "$U" --since "$prev" "$W/inc$round" >"$W/inc$round.txt" \
        || fail "cbt: increment since $prev"
    INCS+=("$W/inc$round")
    ./scripts/backup.py restore "$W/restored.raw" "$W/full.raw" "${INCS[@]}" >/dev/null \
        || fail "cbt: restore"
    nbdcopy "$U" "$W/live.raw"
    cmp "$W/restored.raw" "$W/live.raw" || fail "cbt: round $round: full + increments differ from the export"
    # The NBD dirty bitmap (nbdinfo) and `lightnvm changed` (control socket) agree.
    nbdinfo --map="qemu:dirty-bitmap:$prev" --json "$U" >"$W/dirty.json"
    "$B" changed "$IMG" --since "$prev" --json >"$W/changed.json"
    python3 - "$W" "$round" <<'PY' || fail "cbt: dirty bitmap vs lightnvm changed, round $round"
import json, sys
w, r = sys.argv[1], sys.argv[2]
nbd = sum(e["length"] for e in json.load(open(f"{w}/dirty.json")) if e["type"] & 1)
ch = json.load(open(f"{w}/changed.json"))
assert nbd == ch["changed_bytes"] > 0, (nbd, ch["changed_bytes"])
# False positives: reported changed, yet equal to the previous round's copy, per 4 KiB.
prev = open(f"{w}/prev.raw" if int(r) > 1 else f"{w}/full.raw", "rb").read()
live = open(f"{w}/live.raw", "rb").read()
differ = sum(1 for i in range(0, len(live), 4096) if live[i:i+4096] != prev[i:i+4096])
print(f"    round {r}: {nbd >> 12} blocks reported changed, {differ} differ "
      f"({100 * (1 - differ / max(1, nbd >> 12)):.2f}% false positives)")
assert differ <= nbd >> 12
PY
    mv "$W/live.raw" "$W/prev.raw"
    "$B" mark delete "$IMG" "$prev" >/dev/null || fail "cbt: delete $prev"
done
stop_server
"$B" mark list "$IMG" | grep -q "^m3 " || fail "cbt: mark m3 not kept by a clean stop"
# GC was active: blocks were erased (a fresh image's blocks come erased).
ERASES=$("$B" info "$IMG" | sed -n 's/^erase counts.*mean \([0-9.]*\).*/\1/p')
python3 -c "import sys; sys.exit(0 if float('$ERASES') >= 1 else 1)" \
    || fail "cbt: GC never ran (mean erase count $ERASES)"
echo "    mean erase count after the rounds: $ERASES"
rm -f "$W"/inc* "$W"/*.raw
unset IMG
ok "changed-block tracking: 3 rounds of GC, trims and kill -9; full + increments == export"

# Bit rot in the image: one bit of one written 4 KiB sector flipped on disk while the server
# is down. Reads of it fail with EIO; a structured read (libnbd) gets every other sector of
# the range, with an error chunk at the damaged one's offset; written whole, it reads again.
IMG="$W/rot.img"
"$B" format "$IMG" --preset small >/dev/null
start_server
/usr/bin/python3 - "$U" <<'EOF' || fail "bit rot: writing the pattern"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(8):
    h.pwrite(bytes([0xA0 + i]) * 4096, i * 4096)
h.flush()
h.shutdown()
EOF
stop_server
/usr/bin/python3 - "$IMG" <<'EOF' || fail "bit rot: flipping a bit of LBA 3 in the image"
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    pattern = bytes([0xA3]) * 4096
    at = m.find(pattern)
    assert at >= 0 and m.find(pattern, at + 4096) < 0, "LBA 3 is not in the image once"
    m[at + 100] ^= 0x10
    m.flush()
EOF
start_server
/usr/bin/python3 - "$U" <<'EOF' || fail "bit rot: reads of a damaged sector"
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def fails_with_eio(f):
    try:
        f()
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
        return
    sys.exit("a read of the damaged sector succeeded")
fails_with_eio(lambda: h.pread(4096, 3 * 4096))
chunks = []
def chunk(buf, offset, status, error):
    chunks.append((offset, len(buf), status, error.value))
    if status == nbd.READ_DATA:
        assert all(b == 0xA0 + (offset + i) // 4096 for i, b in enumerate(buf)), offset
    return 0
fails_with_eio(lambda: h.pread_structured(8 * 4096, 0, chunk))
data = sorted((o, n) for o, n, s, _ in chunks if s == nbd.READ_DATA)
errors = [(o, e) for o, _, s, e in chunks if s == nbd.READ_ERROR]
assert data == [(0, 3 * 4096), (4 * 4096, 4 * 4096)], chunks
assert errors == [(3 * 4096, errno.EIO)], chunks
assert h.pread(4096, 4 * 4096) == bytes([0xA4]) * 4096
h.pwrite(bytes([0x55]) * 4096, 3 * 4096)
want = b"".join(bytes([0x55 if i == 3 else 0xA0 + i]) * 4096 for i in range(8))
assert h.pread(8 * 4096, 0) == want
h.shutdown()
EOF
stop_server
unset IMG
ok "bit rot in the image: EIO for the damaged sector; structured reads name it, deliver the rest"

# A host file system too small for the image: format says so and leaves nothing behind (the
# image is preallocated, so a full disk is never met while serving).
mkdir -p "$W/small"
if mount -t tmpfs -o size=8m tmpfs "$W/small" 2>/dev/null; then
    if "$B" format "$W/small/x.img" --preset small >"$W/small.txt" 2>&1; then
        fail "format succeeded on a file system too small for the image"
    fi
    grep -q "not enough space" "$W/small.txt" || { cat "$W/small.txt" >&2; fail "no clear no-space error"; }
    [[ ! -e "$W/small/x.img" ]] || fail "a partial image was left behind"
    umount "$W/small"
    ok "host file system too small: format refuses clearly, nothing left behind"
else
    echo "  skip: cannot mount a small tmpfs here (not root?)"
fi

echo "$PASSED passed, 0 failed"
