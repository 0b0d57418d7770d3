#!/usr/bin/env bash
# Benchmark (not a test): fio 4 KiB random writes and reads against `lightnvm serve` (image
# on tmpfs, timing model off) and against `nbdkit memory` of the same size, in the same run:
# one connection at QD16 and QD32, and 4 connections x QD16. Prints IOPS and the ratio, and
# each server's CPU time per request (utime + stime of the server process over the run:
# steadier than IOPS on a shared machine, where fio competes for the same cores). Uniform
# random offsets with repeats (`--norandommap`), not fio's default once-per-pass map.
# Usage: scripts/bench-nbd.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
source scripts/bench-lib.sh
need_packages nbdkit fio libnbd-bin
P1=$((30000 + RANDOM % 10000)); P2=$((P1 + 1))

"$B" format "$DIR/img" --preset default --timing none >/dev/null
"$B" serve "$DIR/img" --listen "127.0.0.1:$P1" >"$DIR/serve.log" 2>&1 &
PIDS+=($!)
SERVER1=$!
wait_nbd "$P1"
SIZE=$(nbdinfo --size "nbd://127.0.0.1:$P1")
nbdkit --foreground --port "$P2" --ipaddr 127.0.0.1 memory "size=$SIZE" >/dev/null 2>&1 &
PIDS+=($!)
SERVER2=$!
wait_nbd "$P2"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_fio() { # uri rw qd jobs server_pid -> "IOPS CPU_US_PER_REQUEST"
    local json c0 c1 hz
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$5")
    json=$(fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth="$3" --numjobs="$4" \
        --group_reporting --size=512m --norandommap --time_based --runtime="$SECS" --output-format=json \
        2>"$DIR/fio.err") || { cat "$DIR/fio.err" >&2; exit 1; }
    c1=$(cpu_ticks "$5")
    python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
iops = j["write"]["iops"] + j["read"]["iops"]
ticks, hz, secs = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(int(iops), round(ticks / hz * 1e6 / (iops * secs), 2))' "$((c1 - c0))" "$hz" "$SECS" <<<"$json"
}
fill() { fio --name=f --ioengine=nbd --uri="$1" --rw=write --bs=1m --iodepth=4 --size=512m >/dev/null; }

echo "fio 4 KiB, ${SECS}s per run, 512 MiB working set; lightnvm image on tmpfs, timing off"
printf "%-10s %-10s %10s %10s %7s %12s %12s\n" workload depth lightnvm nbdkit ratio "lnvm µs/req" "nbdkit µs/req"
fill "nbd://127.0.0.1:$P1"; fill "nbd://127.0.0.1:$P2"
for rw in randwrite randread; do
    for shape in "16 1" "32 1" "16 4"; do
        read -r qd jobs <<<"$shape"
        read -r a ac <<<"$(run_fio "nbd://127.0.0.1:$P1" "$rw" "$qd" "$jobs" "$SERVER1")"
        read -r b bc <<<"$(run_fio "nbd://127.0.0.1:$P2" "$rw" "$qd" "$jobs" "$SERVER2")"
        printf "%-10s %-10s %10s %10s %7s %12s %12s\n" "$rw" "${jobs}x QD$qd" "$a" "$b" \
            "$(python3 -c "print(f'{$a/$b:.2f}')")" "$ac" "$bc"
    done
done
