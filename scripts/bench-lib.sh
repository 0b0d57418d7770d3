# Shared by the benchmark scripts (sourced): installs Debian packages they need, builds the
# release binary as $B, makes a tmpfs scratch directory $DIR that is removed on exit together
# with the processes in PIDS, and waits for NBD servers.
need_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; }
    done
}
# The features CI builds with: no rebuild between a test run and a benchmark.
cargo build --release --quiet -p lightnvm-cli --features ublk
B="$PWD/target/release/lightnvm"
DIR=$(mktemp -d /dev/shm/lightnvm-bench-XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
wait_nbd() { # port
    for _ in $(seq 100); do nbdinfo "nbd://127.0.0.1:$1" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "no NBD server on port $1" >&2
    exit 1
}
