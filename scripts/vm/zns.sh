# Part zns: lightnvm on a QEMU NVMe ZNS namespace (/dev/nvme0n1) inside the guest, power cuts.
# Boot 1 formats the device. Every boot starts `lightnvm serve /dev/nvme0n1` (recovery after
# a cut), connects the kernel NBD client over 127.0.0.1 and verifies every flushed write from
# the log in the host share; boots 1..CYCLES then write 1 MiB blocks (some flushed with
# fsync, some not) until the guest resets itself at a random moment (sysrq b: no sync, guest
# RAM lost; QEMU's device keeps what it completed). Boot CYCLES+1 verifies, stops the server
# with SIGTERM, restarts it and verifies again.
#
# Blocks hold a deterministic text pattern: 256 sectors of 64 lines of 64 bytes, each line
# naming the region, the write's sequence number, the sector and the line; the log records
#   S r seq md5   a write started          W r seq md5   it completed (not flushed)
#   F             a flush completed: every completed write before it is durable
# A region must read back as its last durable write, or - if later writes to it were started
# or completed but not flushed - as one of those; a mix is accepted only sector by sector
# (every 4 KiB sector whole, from one of those writes).
#
# With vmtest_backend=file (part "powercut") the same test runs over a lightnvm file image on
# ext4 on a plain NVMe namespace: boot 1 makes the file system; every boot mounts it (journal
# replay after a cut) and serves /data/lightnvm.img.
. /vmtest/common.sh
set -u
BACKEND=$(arg vmtest_backend)
BACKEND=${BACKEND:-zoned}
DEV=/dev/nvme0n1
NBD=/dev/nbd0
ADDR=127.0.0.1
PORT=10809
S=/share/zns
CYCLES=$(arg vmtest_cycles)
CYCLES=${CYCLES:-3}
mkdir -p $S

BOOT=$(( $(cat $S/boot 2>/dev/null || echo 0) + 1 ))
echo $BOOT >$S/boot
say "boot $BOOT of $((CYCLES + 1))"
[ "$BOOT" -le $((CYCLES + 2)) ] || fail "boot $BOOT: the guest keeps rebooting (a panic?)"

modprobe nvme || fail "modprobe nvme"
wait_for 30 test -b $DEV || fail "no $DEV"
ZONED=$(cat /sys/block/nvme0n1/queue/zoned)
modprobe nbd nbds_max=2 || fail "modprobe nbd"
if [ "$BACKEND" = file ]; then
    [ "$ZONED" = none ] || fail "$DEV is '$ZONED', expected a plain namespace"
    if [ "$BOOT" = 1 ]; then
        $MKFS -q -t ext4 -F $DEV || fail "mkfs.ext4 $DEV"
    fi
    mkdir -p /data
    mount -t ext4 $DEV /data || fail "mount $DEV"
    TARGET=/data/lightnvm.img
    FORMAT_ARGS="--preset small --blocks 16"   # 64 MiB of flash, 28 MiB exported: GC runs
else
    [ "$ZONED" = host-managed ] || fail "$DEV is '$ZONED', not host-managed"
    say "$DEV: $(cat /sys/block/nvme0n1/queue/nr_zones 2>/dev/null) zones of $(( $(cat /sys/block/nvme0n1/queue/chunk_sectors) / 2048 )) MiB, max open $(cat /sys/block/nvme0n1/queue/max_open_zones), max active $(cat /sys/block/nvme0n1/queue/max_active_zones)"
    if [ "$BOOT" -gt 1 ]; then
        # The zones' write pointers must have survived the reset (they live in QEMU's memory).
        say "zones after the reset: $(/usr/sbin/blkzone report $DEV | awk '{ for (i = 1; i < NF; i++) if ($i == "zcond:") c[$(i + 1)]++ } END { for (k in c) printf "%s %s; ", c[k], k }')"
    fi
    TARGET=$DEV
    FORMAT_ARGS=""
fi

# The last write number used, kept across power cuts on the host's share. Saved by rename
# (a cut between the truncation and the write of `echo >` left it empty once, and the
# numbering would have started again); read back as the larger of the file and the log's
# highest number (the log names every write before it is sent).
save_seq() { echo "$1" >$S/seq.new && mv $S/seq.new $S/seq; }
load_seq() {
    awk -v f="$(cat $S/seq 2>/dev/null)" '($1 == "S" || $1 == "W") && $3 + 0 > m { m = $3 + 0 }
        END { f += 0; print (f > m ? f : m) + 0 }' $S/log
}

if [ "$BOOT" = 1 ]; then
    lightnvm format $TARGET $FORMAT_ARGS >/tmp/format.log 2>&1 || { cat /tmp/format.log; fail "lightnvm format $TARGET"; }
    cat /tmp/format.log
    : >$S/log
    save_seq 0
fi

SERVER=""
start_server() {
    : >/tmp/serve.log
    lightnvm serve $TARGET --listen $ADDR:$PORT --no-control >>/tmp/serve.log 2>&1 &
    SERVER=$!
    # Recovery after a cut can take a while under TCG; a server that exits fails at once.
    _n=1500
    until grep -q "listening on" /tmp/serve.log; do
        kill -0 $SERVER 2>/dev/null && [ $_n -gt 0 ] || { tail -20 /tmp/serve.log; fail "lightnvm serve $TARGET did not start"; }
        _n=$((_n - 1))
        sleep 0.2
    done
    cat /tmp/serve.log >>/tmp/serve.all
}
stop_server() {
    kill -TERM $SERVER
    wait $SERVER
    _rc=$?
    SERVER=""
    [ $_rc = 0 ] || { tail -20 /tmp/serve.log; fail "lightnvm serve exited $_rc after SIGTERM"; }
}

# gen R SEQ: the 1 MiB block of write SEQ to region R: 256 sectors of 64 lines of 64 bytes,
# a header line naming region, write and sector, then 63 lines that depend on the write only
gen() {
    awk -v r="$1" -v s="$2" 'BEGIN {
        f = sprintf("%08x", (s * 2654435761) % 2147483648)
        line = sprintf("s=%07d %s", s, substr(f f f f f f f, 1, 53))
        body = ""
        for (l = 1; l < 64; l++) body = body line "\n"
        for (k = 0; k < 256; k++) printf "r=%04d s=%07d k=%03d %s\n%s", r, s, k, substr(f f f f f, 1, 40), body
    }'
}

# candidates: from the log, per region "r md5:seq,md5:seq..." of the acceptable contents
candidates() {
    awk '
    $1 == "S" { c[$2] = c[$2] " " $4 ":" $3; pend[$2] = $4 ":" $3; seen[$2] = 1 }
    $1 == "W" { last[$2] = $4 ":" $3 }
    $1 == "F" { for (r in last) { c[r] = " " last[r] }; for (r in last) delete last[r] }
    END { for (r in seen) print r c[r] }' $S/log
}

# sector_check R "seq seq ...": every sector of region R whole and from one of the seqs
sector_check() {
    $DD if=$NBD bs=1M skip="$1" count=1 iflag=direct status=none | awk -v r="$1" -v ok=" $2 " '
    function want(s, k, l,   f) {
        f = sprintf("%08x", (s * 2654435761) % 2147483648)
        if (l == 0) return sprintf("r=%04d s=%07d k=%03d %s", r, s, k, substr(f f f f f, 1, 40))
        return sprintf("s=%07d %s", s, substr(f f f f f f f, 1, 53))
    }
    {
        n = NR - 1; k = int(n / 64); l = n % 64
        if (l == 0) { split($2, a, "="); sub(/^0+/, "", a[2]); sec = a[2] + 0; if (index(ok, " " sec " ") == 0) bad = bad " " k }
        if ($0 != want(sec, k, l) && (bad == "" || substr(bad, length(bad) - length(k)) != " " k)) bad = bad " " k
    }
    END { if (NR != 16384) bad = bad " (" NR " lines)"; if (bad != "") { print "bad sectors:" bad; exit 1 } }'
}

put() { # R SEQ LOG: write block SEQ to region R (no flush), logged S before and W after
    gen "$1" "$2" >/tmp/blk
    set -- "$1" "$2" "$3" $(md5sum </tmp/blk)
    _m=$4
    echo "S $1 $2 $_m" >>"$3"
    $DD if=/tmp/blk of=$NBD bs=1M seek="$1" oflag=direct conv=notrunc status=none || fail "write $2 to region $1"
    echo "W $1 $2 $_m" >>"$3"
}

verify() { # LABEL: every region in the log checked; the log rewritten to what was found
    _lost=0; _mixed=0; _new=0; _n=0; _unc=0
    : >/tmp/log.new
    : >/tmp/mixed
    candidates >/tmp/cands
    # One read of all regions, one md5sum: few processes (each costs under TCG).
    rm -rf /tmp/rg && mkdir /tmp/rg
    $DD if=$NBD bs=1M count=$NR iflag=direct status=none | /usr/bin/split -b 1048576 -d -a 4 - /tmp/rg/ ||
        fail "reading the export"
    (cd /tmp/rg && md5sum -- *) >/tmp/sums
    rm -rf /tmp/rg
    # Per region: "r seq-found|- md5 old|new candidates seq..." (old: the durable write)
    awk 'NR == FNR { sub(/^0+/, "", $2); got[$2 + 0] = $1; next }
        { r = $1; m = got[r]; hit = "-"; seqs = ""
          for (i = 2; i <= NF; i++) { split($i, c, ":"); seqs = seqs " " c[2]; if (c[1] == m) hit = c[2] }
          split($2, f, ":")
          print r, hit, (m == "" ? "unread" : m), (hit != "-" && hit != f[2]) ? "new" : "old", NF - 1, seqs }' \
        /tmp/sums /tmp/cands >/tmp/verdicts
    while read -r r hit m age ncand seqs; do
        _n=$((_n + 1))
        [ "$ncand" -gt 1 ] && _unc=$((_unc + 1))
        : >/tmp/sc
        if [ "$hit" != - ]; then
            [ "$age" = new ] && _new=$((_new + 1))
            echo "S $r $hit $m" >>/tmp/log.new
            echo "W $r $hit $m" >>/tmp/log.new
        elif [ "$ncand" -gt 1 ] && sector_check "$r" "$seqs" >/tmp/sc 2>&1; then
            _mixed=$((_mixed + 1))   # unflushed writes, partly there: legal; rewritten below
            echo "$r" >>/tmp/mixed
        else
            _lost=$((_lost + 1))
            say "region $r: md5 $m is none of writes$seqs $(cat /tmp/sc)"
        fi
    done </tmp/verdicts
    # Regions read as a mix of writes get a fresh block, so that each has one expectation.
    seq=$(load_seq)
    for r in $(cat /tmp/mixed); do
        seq=$((seq + 1))
        put $r $seq /tmp/log.new
    done
    save_seq $seq
    # What was read is made durable before it becomes the new expectation.
    $DD if=/dev/null of=$NBD conv=fsync,notrunc status=none || fail "flush after verify"
    echo F >>/tmp/log.new
    mv /tmp/log.new $S/log.new && mv $S/log.new $S/log
    say "$1: $_n regions checked, $_lost lost; $_unc had unflushed writes: $_new read as the newer write, $_mixed partly"
    [ $_lost = 0 ]
}

start_server
nbd_connect $ADDR $PORT $NBD || fail "nbd-client to the guest's server"
SIZE=$(( $(cat /sys/block/nbd0/size) * 512 ))
# Regions cover about 60% of the export, at most vmtest_regions MiB (default 24, for CI's
# time; on the small file image that is all 60% and GC has to move data).
MAXR=$(arg vmtest_regions)
MAXR=${MAXR:-24}
NR=$(( (SIZE >> 20) * 6 / 10 ))
[ $NR -le $MAXR ] || NR=$MAXR
say "export $((SIZE >> 20)) MiB, regions used: $NR x 1 MiB; $(grep -E 'opened|recover' /tmp/serve.log | sed 's/.*INFO //' | tail -2 | tr '\n' ' ')"

if [ "$BOOT" = 1 ]; then
    # Every region gets a first block, flushed: each has a durable expectation from here on.
    r=0
    while [ $r -lt $NR ]; do
        put $r $((r + 1)) $S/log
        r=$((r + 1))
    done
    save_seq $NR
    $DD if=/dev/null of=$NBD conv=fsync,notrunc status=none || fail "flush after the first fill"
    echo F >>$S/log
    say "filled $NR regions"
fi
if [ "$BOOT" -gt 1 ]; then
    verify "after power cut $((BOOT - 1))" || fail "flushed writes lost after power cut $((BOOT - 1))"
    step "verified cut=$((BOOT - 1)) lost=0"
fi

if [ "$BOOT" -gt "$CYCLES" ]; then
    nbd_disconnect $NBD || fail "nbd-client -d"
    stop_server
    grep -q "stopped cleanly" /tmp/serve.log || fail "no clean stop in the server log"
    start_server
    grep -q "(clean)" /tmp/serve.log || say "warning: the reopen after SIGTERM was not reported clean: $(grep opened /tmp/serve.log)"
    nbd_connect $ADDR $PORT $NBD || fail "reconnect after SIGTERM"
    verify "after SIGTERM and restart" || fail "data lost across a clean restart"
    nbd_disconnect $NBD
    stop_server
    say "$(lightnvm info $TARGET 2>/dev/null | grep -E 'erase counts|blocks ' | tr -s ' ' | tr '\n' ';')"
    if [ "$BACKEND" = file ]; then umount /data || fail "umount /data"; fi
    info "$CYCLES power cuts, $(load_seq) writes, 0 flushed writes lost"
    exit 0
fi

# Write until the cut: it comes 4-15 s after the first write, from a background shell.
CUT=$((4 + $(rnd 12)))
( sleep $CUT; echo "VMTEST-STEP zns power-cut after ${CUT}s, at write $(load_seq)"; echo b >/proc/sysrq-trigger ) &
seq=$(load_seq)
step "writing from write $((seq + 1)) (cut in ${CUT}s)"
while :; do
    seq=$((seq + 1))
    save_seq $seq
    put $(rnd $NR) $seq $S/log
    # Two writes in three are followed by a flush (fsync of the device: NBD_CMD_FLUSH).
    if [ "$(rnd 3)" != 0 ]; then
        $DD if=/dev/null of=$NBD conv=fsync,notrunc status=none || fail "flush after write $seq"
        echo F >>$S/log
    fi
done
