#!/usr/bin/env bash
# Benchmark (not a test): does the emulation agree with the simulation of the same device?
# For 4 KiB random reads and writes at QD1 and QD16 on one connection and 4 connections x
# QD4, prints side by side:
#   sim       `lightnvm sim` (virtual time): predicted IOPS and p50 latency
#   realtime  fio against `lightnvm serve --realtime` (completions at the modeled instant)
#   rt+credit fio against `lightnvm serve --realtime --transport-credit-us C`: replies leave
#             C µs before the modeled instant, C being what the path (unix socket or TCP,
#             the server's CPU, fio) adds to a request, calibrated once at the start as
#             realtime's QD1 randread p50 less sim's, so that fio sees the model's latency
#             rather than the model's plus C; the other rows check the one constant
#   none      fio against `lightnvm serve` (same image, replies at once: the CPU bound)
# and realtime / min(sim, none): the share of what the model allows that a client gets,
# without and with the credit. Then, for every row, sim with the calibrated path cost as a
# think time (`sim --think-us C`: what the model predicts for a client on this path)
# against realtime.
# Same geometry (`default`: 8 ch x 2 LUNs) and timing (`femu`), image filled first and on
# tmpfs; fio over the whole device, uniform random with repeats as sim's (`--norandommap`:
# fio's default visits every block once per pass, a permutation that GC finds far easier
# than uniform random writes). Each write row starts from a fresh copy of the filled
# image, and its sim run is as many requests as the realtime run completed: the same phase
# (fill, then N random writes) in both. The transport is a unix socket (the default) or TCP
# on the loopback: the device model is the same, the transport's round trip adds to every
# request (more on TCP; see docs/measurements.md).
# WRITE_CACHE_KIB=N (default 0): the device has a volatile write cache of N KiB (both the
# image and sim; see docs/media.md): writes are acknowledged once in it.
# Usage: [WRITE_CACHE_KIB=N] scripts/bench-fidelity.sh [SECONDS] [unix|tcp]
#        (default 10 s per fio run, unix)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
TRANSPORT=${2:-unix}
case $TRANSPORT in unix | tcp) ;; *) echo "transport: unix or tcp, not $TRANSPORT" >&2; exit 2 ;; esac
source scripts/bench-lib.sh
need_packages fio libnbd-bin python3
P1=$((30000 + RANDOM % 10000)); P2=$((P1 + 1))
CACHE_KIB=${WRITE_CACHE_KIB:-0}

"$B" format "$DIR/base.img" --preset default --timing femu --write-cache-kib "$CACHE_KIB" >/dev/null
"$B" fill "$DIR/base.img" --percent 100 >/dev/null
P3=$((P1 + 2))
RT_PID=; NONE_PID=; RTC_PID=; CREDIT_US=0; PATH_ROWS=()
# Fresh servers on fresh copies of the filled image: every write row starts where sim's
# run starts (the fill), so both measure the same phase.
start_servers() {
    [[ -n $RT_PID ]] && { kill "$RT_PID" "$NONE_PID" "$RTC_PID"; wait "$RT_PID" "$NONE_PID" "$RTC_PID" 2>/dev/null || true; }
    local img
    for img in rt none rtc; do cp "$DIR/base.img" "$DIR/$img.img"; done
    "$B" serve "$DIR/rt.img" --realtime --listen "127.0.0.1:$P1" --socket "$DIR/$P1.sock" >"$DIR/rt.log" 2>&1 &
    RT_PID=$!
    "$B" serve "$DIR/none.img" --listen "127.0.0.1:$P2" --socket "$DIR/$P2.sock" >"$DIR/none.log" 2>&1 &
    NONE_PID=$!
    "$B" serve "$DIR/rtc.img" --realtime --transport-credit-us "$CREDIT_US" --listen "127.0.0.1:$P3" \
        --socket "$DIR/$P3.sock" >"$DIR/rtc.log" 2>&1 &
    RTC_PID=$!
    PIDS+=("$RT_PID" "$NONE_PID" "$RTC_PID")
    wait_nbd "$P1"; wait_nbd "$P2"; wait_nbd "$P3"
}
start_servers
SIZE=$(nbdinfo --size "nbd://127.0.0.1:$P1")

uri() { # port
    if [[ $TRANSPORT == unix ]]; then echo "nbd+unix:///?socket=$DIR/$1.sock"; else echo "nbd://127.0.0.1:$1"; fi
}
fio_run() { # port rw qd jobs -> "IOPS P50_US REQUESTS" (the whole device, no ramp: every
    # request counts)
    local json
    json=$(fio --name=b --ioengine=nbd --uri="$(uri "$1")" --rw="$2" --bs=4k --iodepth="$3" \
        --numjobs="$4" --group_reporting --size="$SIZE" --norandommap --time_based --runtime="$SECS" \
        --output-format=json 2>"$DIR/fio.err") || { cat "$DIR/fio.err" >&2; exit 1; }
    python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["iops"] > 0 else j["write"]
print(int(d["iops"]), round(d["clat_ns"]["percentile"]["50.000000"] / 1000, 1), d["total_ios"])' <<<"$json"
}
sim_run() { # read_pct qd requests [think_us] -> "IOPS P50_US"
    "$B" sim --preset default --timing femu --write-cache-kib "$CACHE_KIB" --read-pct "$1" --qd "$2" \
        --precondition 0 --requests "$3" --think-us "${4:-0}" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
lat = r["latency_us"]["read" if r["latency_us"]["read"]["count"] else "write"]
print(int(r["phase"]["achieved_iops"]), lat["p50"])'
}

# The transport credit: what the path adds to a read at QD1, where the model's latency is
# the same for every read (tR + transfer, no queueing): realtime's p50 less sim's.
read -r _ rp _ <<<"$(fio_run "$P1" randread 1 1)"
read -r _ sp <<<"$(sim_run 100 1 100000)"
CREDIT_US=$(python3 -c "print(max(0, round($rp - $sp)))")
start_servers

echo "4 KiB random I/O, ${SECS}s per fio run over $TRANSPORT; default geometry (8 ch x 2 LUNs), femu timing," \
    "write cache $CACHE_KIB KiB, filled image on tmpfs"
echo "transport credit (rt+c): $CREDIT_US µs, calibrated: realtime's QD1 randread p50 less sim's"
# The realtime server measured at start-up how late this host wakes a sleeping thread: fio
# wakes that late for each reply too (what bounds the QD1 rows on a slow-waking host).
grep -o 'wakes a sleeping thread [0-9.]* µs late (median; p90 [0-9.]* µs)' "$DIR/rt.log" |
    head -1 | sed 's/^/host: /' || true
printf "%-10s %-9s %9s %8s %9s %8s %9s %8s %9s %7s %7s\n" workload depth "sim IOPS" "sim p50" "rt IOPS" "rt p50" \
    "rt+c IOPS" "rt+c p50" "none IOPS" "rt/min" "rt+c/min"
for rw in randread randwrite; do
    pct=$([[ $rw == randread ]] && echo 100 || echo 0)
    for shape in "1 1" "16 1" "4 4"; do
        read -r qd jobs <<<"$shape"
        if [[ $rw == randwrite ]]; then
            # Writes change the device: each row from the fill, and sim runs as many
            # requests as the emulation served.
            start_servers
            # (the credited server's run is not the one sim is sized by: it completes more)
            read -r ri rp rn <<<"$(fio_run "$P1" "$rw" "$qd" "$jobs")"
            read -r ci cp _ <<<"$(fio_run "$P3" "$rw" "$qd" "$jobs")"
            read -r ni _ _ <<<"$(fio_run "$P2" "$rw" "$qd" "$jobs")"
            read -r si sp <<<"$(sim_run "$pct" $((qd * jobs)) "$rn")"
        else
            read -r ri rp _ <<<"$(fio_run "$P1" "$rw" "$qd" "$jobs")"
            read -r ci cp _ <<<"$(fio_run "$P3" "$rw" "$qd" "$jobs")"
            read -r ni _ _ <<<"$(fio_run "$P2" "$rw" "$qd" "$jobs")"
            read -r si sp <<<"$(sim_run "$pct" $((qd * jobs)) 100000)"
        fi
        ratio=$(python3 -c "print(f'{$ri / min($si, $ni):.2f}')")
        cratio=$(python3 -c "print(f'{$ci / min($si, $ni):.2f}')")
        printf "%-10s %-9s %9s %8s %9s %8s %9s %8s %9s %7s %7s\n" "$rw" "${jobs}x QD$qd" "$si" "$sp" "$ri" "$rp" \
            "$ci" "$cp" "$ni" "$ratio" "$cratio"
        # The path in the model: sim with the calibrated path cost as each request's think
        # time predicts what a client on this path gets from the modeled device (a floor:
        # the path was calibrated at QD1; under load it is longer).
        read -r ti _ <<<"$(sim_run "$pct" $((qd * jobs)) "${rn:-100000}" "$CREDIT_US")"
        PATH_ROWS+=("$(printf "%-10s %-9s %13s %9s %11s" "$rw" "${jobs}x QD$qd" "$ti" "$ri" \
            "$(python3 -c "print(f'{$ri / $ti:.2f}')")")")
    done
done
echo
echo "With the path in the model (sim --think-us $CREDIT_US, the calibrated path cost) against realtime:"
printf "%-10s %-9s %13s %9s %11s\n" workload depth "sim+path IOPS" "rt IOPS" "rt/sim+path"
printf "%s\n" "${PATH_ROWS[@]}"
