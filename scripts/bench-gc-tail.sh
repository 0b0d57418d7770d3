#!/usr/bin/env bash
# Benchmark (not a test): does garbage collection hurt latency? `lightnvm sim`, virtual time,
# deterministic. Random 4 KiB reads and writes, 70/30, open loop (Poisson arrivals) at half the
# device's sustained steady-state rate (QD32 closed loop, measured first), on the `default`
# geometry (8 ch x 2 LUNs, 1.25 GiB raw, OP 0.11):
#   GC active  after a fill and 2 capacities of random writes (steady state), 200,000 requests
#   GC idle    right after the fill: 60,000 requests, which fit in the free lines (the run
#              checks that GC did not start)
# and prints read and write p99 / p99.9 with the ratio active / idle, for three devices:
# `mqsim` (reads first, erase suspend), `femu` with reads-first scheduling (no suspend), and
# `femu` as FEMU models it (FIFO, no suspend).
# Usage: scripts/bench-gc-tail.sh [SEED]   (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-1}
cargo build --release --quiet -p lightnvm-cli
B="$PWD/target/release/lightnvm"
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }

sim() { # device extra-args... -> JSON on stdout
    local device=$1
    shift
    # shellcheck disable=SC2086 # the device is several flags
    "$B" sim --preset default $device --read-pct 70 --qd 32 --seed "$SEED" --json "$@" 2>/dev/null
}
field() { # python expression on r (the result) -> value
    python3 -c "import json,sys; r=json.load(sys.stdin)['result']; print($1)"
}

printf "%-11s %-11s %9s %9s %10s %10s %10s %10s\n" device "" "rate IOPS" "GC runs" "read p99" "read p99.9" "write p99" "write p99.9"
for label in mqsim femu-rf femu; do
    case $label in
    mqsim) timing="--timing mqsim" ;;
    femu-rf) timing="--timing femu --scheduling reads-first" ;;
    femu) timing="--timing femu --scheduling fifo" ;;
    esac
    sustained=$(sim "$timing" --requests 200000 | field 'r["phase"]["achieved_iops"]')
    rate=$(python3 -c "print(round($sustained / 2))")
    active=$(sim "$timing" --rate "$rate" --requests 200000)
    idle=$(sim "$timing" --rate "$rate" --requests 60000 --precondition 0)
    runs=$(field 'r["gc"]["runs"]' <<<"$idle")
    if [[ $runs != 0 ]]; then
        echo "the GC-idle run started GC ($runs runs): the baseline is not idle" >&2
        exit 1
    fi
    for name in active idle; do
        json=${!name}
        printf "%-11s %-11s %9s %9s %10s %10s %10s %10s\n" "$label" "GC $name" "$rate" \
            "$(field 'r["gc"]["runs"]' <<<"$json")" \
            "$(field 'r["latency_us"]["read"]["p99"]' <<<"$json")" \
            "$(field 'r["latency_us"]["read"]["p999"]' <<<"$json")" \
            "$(field 'r["latency_us"]["write"]["p99"]' <<<"$json")" \
            "$(field 'r["latency_us"]["write"]["p999"]' <<<"$json")"
    done
    python3 - "$active" "$idle" "$label" "$sustained" <<'EOF'
import json, sys
a, i = (json.loads(x)["result"]["latency_us"] for x in sys.argv[1:3])
ratio = lambda k, p: a[k][p] / i[k][p] if i[k][p] else float("inf")
print(f"{sys.argv[3]:<11} {'active/idle':<11} {'(of ' + str(round(float(sys.argv[4]))) + ')':>9} {'':>9} "
      f"{ratio('read', 'p99'):>10.2f} {ratio('read', 'p999'):>10.2f} "
      f"{ratio('write', 'p99'):>10.2f} {ratio('write', 'p999'):>10.2f}")
EOF
done
