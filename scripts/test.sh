#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests.
# Installs what it needs on a fresh Debian machine (run as root) and works offline otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in cargo; do
    command -v "$tool" >/dev/null || { echo "test.sh: $tool is required (install Rust with rustup)" >&2; exit 1; }
done
# Debian packages the real-client NBD tests use, and libclang for the ublk crate's build
# (libublk-rs-sys generates its kernel bindings with bindgen).
apt_packages=(qemu-utils libnbd-bin fio fuse3 e2fsprogs util-linux python3 python3-libnbd libclang-dev)
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "test.sh: missing Debian packages: ${need_apt[*]} (run as root or install them)" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
echo "== cargo test"
# The byte-flip experiment at full size: 50 trials of 200 random flips in a crashed image.
LIGHTNVM_FLIP_SEEDS=50 cargo test --workspace --all-features
echo "== power-cut torture (release build): 2,500 cuts with media faults, 1,000 without, 2,000 with post-cut damage, 3,000 with 4 submitting threads, 1,000 with both damage and 4 threads, 600 on larger devices with 32 MiB writes, 1,000 machine crashes under an image file, 3,000 on six long-lived devices, 6,000 a few dozen operations apart, 3,000 with cuts during recovery (1,000 of them with 4 submitting threads)"
cargo build --release --quiet -p lightnvm-cli --features ublk
./target/release/lightnvm torture --seeds 250 --cuts-per-seed 10
./target/release/lightnvm torture --seeds 100 --start 100000 --cuts-per-seed 10 --no-faults
# Bit rot in written sectors (data and OOB) after each cut, before recovery: damaged LBAs
# read as errors, never as older data.
./target/release/lightnvm torture --seeds 200 --start 200000 --cuts-per-seed 10 --damage
# Four threads share the FTL as the NBD server does (reads in parallel), each writing its own
# slice of the device; a cut at a random media operation, then every LBA is checked.
./target/release/lightnvm torture --seeds 300 --start 300000 --cuts-per-seed 10 --threads 4
# Both: reads beside the owner meet damaged sectors, and GC moves them, while others write.
./target/release/lightnvm torture --seeds 100 --start 350000 --cuts-per-seed 10 --damage --threads 4
# Larger devices with room for 32 MiB atomic writes: every unflushed write checked at every
# cut (all of its sectors or none).
./target/release/lightnvm torture --seeds 60 --start 400000 --cuts-per-seed 10 --large
# Crashes of the machine under an image file: each 4 KiB unit written since the last sync
# reaches the disk or not, on its own (the page cache's writeback order).
./target/release/lightnvm torture --seeds 100 --start 500000 --cuts-per-seed 10 --file
# Long-lived devices: 500 cuts each with media faults, so that grown-bad blocks, marks and
# voided-write entries pile up as they do over a device's life (seeds 8000007 and 8000010
# found checkpoints recovery could not read).
./target/release/lightnvm torture --seeds 6 --start 8000006 --cuts-per-seed 500
# A cut every few dozen media operations (seed 10300002 found a torn page of the media model
# that read back as an older program once a later page of its block tore).
./target/release/lightnvm torture --seeds 20 --start 10300000 --cuts-per-seed 300 --max-ops 50
# Power cuts during recovery too: up to three in a row cut an opening off before one ends.
./target/release/lightnvm torture --seeds 200 --start 12000000 --cuts-per-seed 10 --cut-recovery
./target/release/lightnvm torture --seeds 100 --start 12700000 --cuts-per-seed 10 --cut-recovery --threads 4
echo "== real NBD clients"
./scripts/nbd-clients-test.sh
echo "== VM suite"
./scripts/vm-test.sh
