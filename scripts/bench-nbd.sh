#!/usr/bin/env bash
# Benchmark (not a test): fio 4 KiB random writes and reads at QD16 against `lightnvm serve`
# (image on tmpfs, timing model off) and against `nbdkit memory` of the same size, in the same
# run. Prints IOPS and the ratio. Usage: scripts/bench-nbd.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
source scripts/bench-lib.sh
need_packages nbdkit fio libnbd-bin
P1=$((30000 + RANDOM % 10000)); P2=$((P1 + 1))

"$B" format "$DIR/img" --preset default --timing none >/dev/null
"$B" serve "$DIR/img" --listen "127.0.0.1:$P1" >"$DIR/serve.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P1"
SIZE=$(nbdinfo --size "nbd://127.0.0.1:$P1")
nbdkit --foreground --port "$P2" --ipaddr 127.0.0.1 memory "size=$SIZE" >/dev/null 2>&1 &
PIDS+=($!)
wait_nbd "$P2"

run_fio() { # uri rw -> IOPS
    local json
    json=$(fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth=16 --size=512m \
        --time_based --runtime="$SECS" --ramp_time=2 --output-format=json 2>"$DIR/fio.err") || { cat "$DIR/fio.err" >&2; exit 1; }
    python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]; print(int(j["write"]["iops"] + j["read"]["iops"]))' <<<"$json"
}
fill() { fio --name=f --ioengine=nbd --uri="$1" --rw=write --bs=1m --iodepth=4 --size=512m >/dev/null; }

echo "fio 4 KiB, QD16, ${SECS}s per run, 512 MiB working set; lightnvm image on tmpfs, timing off"
printf "%-12s %14s %14s %8s\n" workload "lightnvm IOPS" "nbdkit memory" ratio
fill "nbd://127.0.0.1:$P1"; fill "nbd://127.0.0.1:$P2"
for rw in randwrite randread; do
    a=$(run_fio "nbd://127.0.0.1:$P1" "$rw")
    b=$(run_fio "nbd://127.0.0.1:$P2" "$rw")
    printf "%-12s %14s %14s %8s\n" "$rw" "$a" "$b" "$(python3 -c "print(f'{$a/$b:.2f}')")"
done
