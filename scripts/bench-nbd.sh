#!/usr/bin/env bash
# Benchmark (not a test): fio 4 KiB random writes and reads against `lightnvm serve` (image
# on tmpfs, timing model off) and against `nbdkit memory` of the same size, in the same run:
# one connection at QD16 and QD32, and 4 connections x QD16. Prints IOPS and the ratio, and
# each server's CPU time per request (utime + stime of the server process over the run:
# steadier than IOPS on a shared machine, where fio competes for the same cores), and fio's
# own CPU in cores (with one job near 1.0, the client bounds both servers alike). Uniform
# random offsets with repeats (`--norandommap`), not fio's default once-per-pass map.
# Then 4 KiB random reads and writes mixed 70/30, where reads go beside the writes
# (`FtlReader`, no lock), against the same server with every read under the FTL's shared
# lock (`LIGHTNVM_READS=locked`) and against nbdkit, same run. Last, 4 KiB random writes over
# the whole (filled) device, where GC works all the time: GC on its own thread (the default)
# against GC inside each write (`LIGHTNVM_GC=inline`), same run, with p99 latency.
# Last, clients keeping one request in flight (QD1, one and four connections): the server
# polling for each next request (the default) against every wait sleeping
# (`LIGHTNVM_POLL=off`) and against nbdkit, same run, with p50 latency.
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
P3=$((P1 + 2))
"$B" format "$DIR/img-locked" --preset default --timing none >/dev/null
LIGHTNVM_READS=locked "$B" serve "$DIR/img-locked" --listen "127.0.0.1:$P3" >"$DIR/serve-locked.log" 2>&1 &
PIDS+=($!)
SERVER3=$!
wait_nbd "$P3"
nbdkit --foreground --port "$P2" --ipaddr 127.0.0.1 memory "size=$SIZE" >/dev/null 2>&1 &
PIDS+=($!)
SERVER2=$!
wait_nbd "$P2"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_fio() { # uri rw qd jobs server_pid -> "IOPS CPU_US_PER_REQUEST FIO_CORES"
    # FIO_CORES: the CPU time fio itself used over the run, in cores (user + system, all its
    # jobs): near 1.0 with one job, the client is the bound, whatever the server.
    local json c0 c1 hz t
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$5")
    t=$( { TIMEFORMAT='%U %S'; time fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --rwmixread=70 --bs=4k \
        --iodepth="$3" --numjobs="$4" --group_reporting --size=512m --norandommap --time_based \
        --runtime="$SECS" --output-format=json >"$DIR/fio.json" 2>"$DIR/fio.err"; } 2>&1) \
        || { cat "$DIR/fio.err" >&2; exit 1; }
    c1=$(cpu_ticks "$5")
    python3 -c '
import json, sys
s = open(sys.argv[5]).read(); j = json.loads(s[s.index("{"):])["jobs"][0]
iops = j["write"]["iops"] + j["read"]["iops"]
ticks, hz, secs = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
fio_cpu = sum(map(float, sys.argv[4].split()))
print(int(iops), round(ticks / hz * 1e6 / (iops * secs), 2), round(fio_cpu / secs, 2))' \
        "$((c1 - c0))" "$hz" "$SECS" "$t" "$DIR/fio.json"
}
fill() { fio --name=f --ioengine=nbd --uri="$1" --rw=write --bs=1m --iodepth=4 --size=512m >/dev/null; }

echo "fio 4 KiB, ${SECS}s per run, 512 MiB working set; lightnvm image on tmpfs, timing off"
echo "(µs/req: each server's CPU per request; fio cores: the client's CPU in cores, against each)"
printf "%-10s %-10s %10s %10s %7s %12s %12s %10s %10s\n" workload depth lightnvm nbdkit ratio "lnvm µs/req" \
    "nbdkit µs/req" "fio cores" "fio cores"
fill "nbd://127.0.0.1:$P1"; fill "nbd://127.0.0.1:$P2"
for rw in randwrite randread; do
    for shape in "16 1" "32 1" "16 4"; do
        read -r qd jobs <<<"$shape"
        read -r a ac af <<<"$(run_fio "nbd://127.0.0.1:$P1" "$rw" "$qd" "$jobs" "$SERVER1")"
        read -r b bc bf <<<"$(run_fio "nbd://127.0.0.1:$P2" "$rw" "$qd" "$jobs" "$SERVER2")"
        printf "%-10s %-10s %10s %10s %7s %12s %12s %10s %10s\n" "$rw" "${jobs}x QD$qd" "$a" "$b" \
            "$(python3 -c "print(f'{$a/$b:.2f}')")" "$ac" "$bc" "$af" "$bf"
    done
done
echo
echo "mixed 70% reads / 30% writes: reads beside the writes vs under the shared lock"
printf "%-10s %-10s %10s %10s %10s %9s %9s\n" workload depth beside locked nbdkit beside/lk beside/nk
fill "nbd://127.0.0.1:$P3"
for shape in "32 1" "16 4"; do
    read -r qd jobs <<<"$shape"
    read -r a _ _ <<<"$(run_fio "nbd://127.0.0.1:$P1" randrw "$qd" "$jobs" "$SERVER1")"
    read -r l _ _ <<<"$(run_fio "nbd://127.0.0.1:$P3" randrw "$qd" "$jobs" "$SERVER3")"
    read -r b _ _ <<<"$(run_fio "nbd://127.0.0.1:$P2" randrw "$qd" "$jobs" "$SERVER2")"
    printf "%-10s %-10s %10s %10s %10s %9s %9s\n" randrw "${jobs}x QD$qd" "$a" "$l" "$b" \
        "$(python3 -c "print(f'{$a/$l:.2f}')")" "$(python3 -c "print(f'{$a/$b:.2f}')")"
done
echo
echo "randwrite over the whole filled device (GC at work): GC thread vs GC inside each write"
P4=$((P1 + 3)); P5=$((P1 + 4))
"$B" format "$DIR/gc-thread.img" --preset default --timing none >/dev/null
cp "$DIR/gc-thread.img" "$DIR/gc-inline.img"
"$B" serve "$DIR/gc-thread.img" --listen "127.0.0.1:$P4" >"$DIR/gc-thread.log" 2>&1 &
PIDS+=($!)
LIGHTNVM_GC=inline "$B" serve "$DIR/gc-inline.img" --listen "127.0.0.1:$P5" >"$DIR/gc-inline.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P4"; wait_nbd "$P5"
for p in "$P4" "$P5"; do
    fio --name=f --ioengine=nbd --uri="nbd://127.0.0.1:$p" --rw=write --bs=1m --iodepth=4 --size="$SIZE" >/dev/null
done
gc_run() { # port qd jobs -> "IOPS P99_US"
    fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$1" --rw=randwrite --bs=4k --iodepth="$2" \
        --numjobs="$3" --group_reporting --size="$SIZE" --norandommap --time_based --runtime="$SECS" \
        --output-format=json 2>"$DIR/fio.err" | python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]["write"]
print(int(j["iops"]), j["clat_ns"]["percentile"]["99.000000"] // 1000)'
}
printf "%-10s %13s %13s %11s %11s %7s\n" depth "thread IOPS" "inline IOPS" "thread p99" "inline p99" ratio
for round in 1 2; do
    for shape in "32 1" "16 4"; do
        read -r qd jobs <<<"$shape"
        read -r a ap <<<"$(gc_run "$P4" "$qd" "$jobs")"
        read -r b bp <<<"$(gc_run "$P5" "$qd" "$jobs")"
        printf "%-10s %13s %13s %9sus %9sus %7s\n" "${jobs}x QD$qd" "$a" "$b" "$ap" "$bp" \
            "$(python3 -c "print(f'{$a/$b:.2f}')")"
    done
done
echo
echo "QD1 clients: polling for the next request (default) vs sleeping (LIGHTNVM_POLL=off) vs nbdkit"
P6=$((P1 + 5))
"$B" format "$DIR/nopoll.img" --preset default --timing none >/dev/null
LIGHTNVM_POLL=off "$B" serve "$DIR/nopoll.img" --listen "127.0.0.1:$P6" >"$DIR/nopoll.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P6"
fill "nbd://127.0.0.1:$P6"
qd1_run() { # port rw jobs -> "IOPS P50_US"
    fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$1" --rw="$2" --bs=4k --iodepth=1 \
        --numjobs="$3" --group_reporting --size=512m --norandommap --time_based --runtime="$SECS" \
        --output-format=json 2>"$DIR/fio.err" | python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
r = j["read"] if j["read"]["iops"] > 0 else j["write"]
print(int(r["iops"]), round(r["clat_ns"]["percentile"]["50.000000"] / 1000, 1))'
}
printf "%-10s %-8s %10s %10s %10s %9s %9s %9s %9s\n" workload depth polling sleeping nbdkit \
    "poll p50" "sleep p50" "nbdkit p50" poll/sleep
for rw in randread randwrite; do
    for jobs in 1 4; do
        read -r a ap <<<"$(qd1_run "$P1" "$rw" "$jobs")"
        read -r c cp <<<"$(qd1_run "$P6" "$rw" "$jobs")"
        read -r b bp <<<"$(qd1_run "$P2" "$rw" "$jobs")"
        printf "%-10s %-8s %10s %10s %10s %7sus %7sus %8sus %9s\n" "$rw" "${jobs}x QD1" "$a" "$c" "$b" \
            "$ap" "$cp" "$bp" "$(python3 -c "print(f'{$a/$c:.2f}')")"
    done
done
