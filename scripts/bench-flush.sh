#!/usr/bin/env bash
# Benchmark (not a test): the cost of FLUSH. fio 4 KiB random writes with a flush after every
# write (QD1) and after every 64 (QD16), against `lightnvm serve` with its image on a disk file
# system and against `nbdkit file` on a raw file of the same size in the same directory, in
# the same run: three rounds, alternating the servers. Prints IOPS and the flush's median
# latency. Both servers make a flush durable with fdatasync; lightnvm's file store needs two
# when a flush follows writes (pages first, then the block-table entries that count them:
# docs/media.md).
# Usage: scripts/bench-flush.sh [SECONDS] [DIR]   (default 8 s; DIR on a disk, default target/)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
source scripts/bench-lib.sh
need_packages nbdkit fio libnbd-bin
DISK=$(mktemp -d "${2:-$PWD/target}/lightnvm-flush-XXXXXX")
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR" "$DISK"' EXIT
P1=$((30000 + RANDOM % 10000)); P2=$((P1 + 1))

"$B" format "$DISK/img" --preset default --timing none >/dev/null
"$B" serve "$DISK/img" --listen "127.0.0.1:$P1" >"$DIR/serve.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P1"
SIZE=$(nbdinfo --size "nbd://127.0.0.1:$P1")
truncate -s "$SIZE" "$DISK/raw"
nbdkit --foreground --port "$P2" --ipaddr 127.0.0.1 file "$DISK/raw" >/dev/null 2>&1 &
PIDS+=($!)
wait_nbd "$P2"

run_fio() { # uri qd fsync -> "IOPS FLUSH_P50_US"
    fio --name=f --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth="$2" --fsync="$3" \
        --size=256m --norandommap --time_based --runtime="$SECS" --output-format=json 2>/dev/null |
        python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
p50 = j.get("sync", {}).get("lat_ns", {}).get("percentile", {}).get("50.000000", 0) / 1000
print(int(j["write"]["iops"]), round(p50))'
}
echo "fio 4 KiB random writes with flushes, ${SECS}s per run; files in $(df --output=fstype "$DISK" | tail -1) $DISK"
printf "%-16s %-6s %10s %10s %7s %16s %16s\n" shape round lightnvm nbdkit ratio "lnvm flush µs" "nbdkit flush µs"
for shape in "1 1" "16 64"; do
    read -r qd fs <<<"$shape"
    for round in 1 2 3; do
        read -r a af <<<"$(run_fio "nbd://127.0.0.1:$P1" "$qd" "$fs")"
        read -r b bf <<<"$(run_fio "nbd://127.0.0.1:$P2" "$qd" "$fs")"
        printf "%-16s %-6s %10s %10s %7s %16s %16s\n" "QD$qd flush/$fs" "$round" "$a" "$b" \
            "$(python3 -c "print(f'{$a/$b:.2f}')")" "$af" "$bf"
    done
done
