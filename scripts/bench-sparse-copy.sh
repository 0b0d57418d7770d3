#!/usr/bin/env bash
# Benchmark (not a test): what block status buys a copy. A fresh 1 GiB-class export (default
# geometry, image on tmpfs, timing off) with 100 MiB written in 25 extents of 4 MiB; then
#   * `nbdinfo --map` must show exactly those extents as data (checked, exits 1 otherwise);
#   * `nbdcopy` of the export to a file, from a server with structured replies and block
#     status, and from a second server on a copy of the image started with --no-structured
#     (so nbdcopy reads every byte, holes included): medians of RUNS copies each, same run;
#   * the same two copies from a peer, `nbdkit memory` of the same size holding the same
#     extents (without: `nbdcopy --no-extents`), in the same run: what the client and this
#     machine allow a server that does no work at all.
# Usage: scripts/bench-sparse-copy.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
source scripts/bench-lib.sh
need_packages libnbd-bin qemu-utils nbdkit
P1=$((30000 + RANDOM % 10000)); P2=$((P1 + 1)); P3=$((P1 + 2))

"$B" format "$DIR/img" --preset default --timing none >/dev/null
"$B" serve "$DIR/img" --listen "127.0.0.1:$P1" --no-control >"$DIR/serve1.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P1"
U1="nbd://127.0.0.1:$P1"
SIZE=$(nbdinfo --size "$U1")
# 25 extents of 4 MiB, 36 MiB apart, extent i filled with byte i + 1.
cmds=()
for i in $(seq 0 24); do cmds+=(-c "write -P $((i + 1)) $((i * 40))M 4M"); done
qemu-io -f raw "${cmds[@]}" "$U1" >/dev/null
nbdinfo --map --json "$U1" >"$DIR/map.json"
python3 - "$DIR/map.json" <<'EOF'
import json, sys
data = [(e["offset"], e["length"]) for e in json.load(open(sys.argv[1])) if not e["type"] & 1]
want = [(i * 40 << 20, 4 << 20) for i in range(25)]
if data != want:
    sys.exit(f"nbdinfo --map shows data at {data[:5]}..., expected {want[:5]}...")
print(f"nbdinfo --map: exactly the 25 written extents (100 MiB) are data; the rest is holes")
EOF
# The same contents behind a server without structured replies / block status.
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
cp --sparse=always "$DIR/img" "$DIR/img2"
"$B" serve "$DIR/img" --listen "127.0.0.1:$P1" --no-control >"$DIR/serve1.log" 2>&1 &
PIDS+=($!)
"$B" serve "$DIR/img2" --listen "127.0.0.1:$P2" --no-control --no-structured >"$DIR/serve2.log" 2>&1 &
PIDS+=($!)
wait_nbd "$P1"; wait_nbd "$P2"
U2="nbd://127.0.0.1:$P2"

"$(command -v nbdkit)" -f -p "$P3" memory "$SIZE" &
PIDS+=($!)
wait_nbd "$P3"
U3="nbd://127.0.0.1:$P3"
qemu-io -f raw "${cmds[@]}" "$U3" >/dev/null

copy_ms() { # nbdcopy arguments -> milliseconds for one nbdcopy to a fresh file
    rm -f "$DIR/out.raw"
    local t0 t1
    t0=$(date +%s%N)
    nbdcopy "$@" "$DIR/out.raw"
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
with=(); without=(); peer_with=(); peer_without=()
for _ in $(seq "$RUNS"); do
    with+=("$(copy_ms "$U1")")
    without+=("$(copy_ms "$U2")")
    peer_with+=("$(copy_ms "$U3")")
    peer_without+=("$(copy_ms --no-extents "$U3")")
done
cmp <(head -c $((4 << 20)) "$DIR/out.raw") <(head -c $((4 << 20)) /dev/zero | tr '\0' '\1') \
    || { echo "copied data differ" >&2; exit 1; }
median() { printf "%s\n" "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
m1=$(median "${with[@]}"); m2=$(median "${without[@]}")
p1=$(median "${peer_with[@]}"); p2=$(median "${peer_without[@]}")
echo "nbdcopy of the $((SIZE >> 20)) MiB export (100 MiB data) to a file on tmpfs, median of $RUNS:"
printf "  %-50s %6d ms   (runs: %s)\n" "lightnvm, structured replies + block status" "$m1" "${with[*]}"
printf "  %-50s %6d ms   (runs: %s)\n" "lightnvm --no-structured (every byte read)" "$m2" "${without[*]}"
printf "  %-50s %6d ms   (runs: %s)\n" "nbdkit memory, block status" "$p1" "${peer_with[*]}"
printf "  %-50s %6d ms   (runs: %s)\n" "nbdkit memory, nbdcopy --no-extents" "$p2" "${peer_without[*]}"
python3 -c "print(f'  speed-up: lightnvm {$m2 / max($m1, 1):.1f}x, nbdkit memory {$p2 / max($p1, 1):.1f}x; lightnvm with block status / nbdkit memory with block status: {$m1 / max($p1, 1):.2f}')"
