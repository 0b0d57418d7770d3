#!/usr/bin/env bash
# Benchmark (not a test): GC victim policies x workloads with `lightnvm sim`, printing WAF
# ((user + GC) / user over the measured phase) and the erase-count spread (max - min).
# Usage: scripts/bench-policies.sh [MEASURE_CAPACITIES]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
MEASURE=${1:-3}
cargo build --release --quiet -p lightnvm-cli
B="$PWD/target/release/lightnvm"
POLICIES=(greedy cost-benefit d-choices fifo)
WORKLOADS=(uniform hotcold:90/10 hotcold:80/20 zipf:0.9)
echo "geometry 4 ch x 2 LUNs x 128 blocks x 32 pages x 2 sectors, OP 0.11, timing off,"
echo "2 capacities of preconditioning, $MEASURE measured; cells: WAF / erase spread"
printf "%-14s" workload
for p in "${POLICIES[@]}"; do printf "%18s" "$p"; done
echo
for w in "${WORKLOADS[@]}"; do
    printf "%-14s" "$w"
    for p in "${POLICIES[@]}"; do
        out=$("$B" sim --workload "$w" --gc "$p" --geometry 4,2,128,32,2 --timing none \
            --precondition 2 --measure "$MEASURE" --json)
        cell=$(python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; e=r["erase_count"]; print("%.2f / %d" % (r["waf"], e["max"] - e["min"]))' <<<"$out")
        printf "%18s" "$cell"
    done
    echo
done
