#!/usr/bin/env bash
# Benchmark (not a test): a client reading at QD1 beside another writing at QD16, both fio
# (nbd engine: libnbd, structured replies) on one filled image (tmpfs, timing off), against
# the same server with every read under the FTL's shared lock (`LIGHTNVM_READS=locked`):
# what reads beside the owner buy a reader while writes and GC go on. Alternates the two
# servers (one at a time, each on a fresh copy of the image) ROUNDS times; prints the
# reader's IOPS and p50 / p99 / p99.9 latency and the writer's IOPS.
# Usage: scripts/bench-read-beside.sh [ROUNDS] [SECONDS]   (default 3 rounds of 6 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-6}
source scripts/bench-lib.sh
need_packages fio libnbd-bin python3
PORT=$((30000 + RANDOM % 10000))

"$B" format "$DIR/base.img" --preset default --timing none >/dev/null
"$B" fill "$DIR/base.img" --percent 100 >/dev/null
run() { # label [env...] -> one line
    local label=$1
    shift
    cp "$DIR/base.img" "$DIR/img"
    env "$@" "$B" serve "$DIR/img" --listen "127.0.0.1:$PORT" --socket "$DIR/sock" >"$DIR/serve.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_nbd "$PORT"
    local size
    size=$(nbdinfo --size "nbd://127.0.0.1:$PORT")
    fio --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/sock" --bs=4k --size="$size" --norandommap \
        --time_based --runtime="$SECS" --output-format=json \
        --name=reader --rw=randread --iodepth=1 --name=writer --rw=randwrite --iodepth=16 \
        2>"$DIR/fio.err" | python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"]
r = j[0]["read"]; p = r["clat_ns"]["percentile"]
us = [p[k] / 1000 for k in ("50.000000", "99.000000", "99.900000")]
print("%-8s %12d %8.1f %8.1f %9.1f %12d" % (sys.argv[1], r["iops"], *us, j[1]["write"]["iops"]))' "$label" ||
        { cat "$DIR/fio.err" >&2; exit 1; }
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}
echo "QD1 reader beside a QD16 writer, 4 KiB random, ${SECS}s per run, timing off, filled image on tmpfs"
printf "%-8s %12s %8s %8s %9s %12s\n" reads "reader IOPS" "p50 µs" "p99 µs" "p99.9 µs" "writer IOPS"
for _ in $(seq "$ROUNDS"); do
    run beside X=1
    run locked LIGHTNVM_READS=locked
done
