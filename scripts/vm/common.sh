# Helpers for the guest scripts (busybox sh). util-linux, e2fsprogs and coreutils tools are
# called by full path where busybox applets of the same name behave differently.
PART=${PART:-$(sed -n 's/.*vmtest=\([a-z]*\).*/\1/p' /proc/cmdline)}
DD=/usr/bin/dd
MKFS=/usr/sbin/mke2fs
E2FSCK=/usr/sbin/e2fsck
SHA=/usr/bin/sha256sum

say() { read -r _up _ </proc/uptime; echo "vmtest[$PART ${_up%.*}s]: $*"; }
step() { echo "VMTEST-STEP $PART $*"; }
info() { echo "VMTEST-INFO $PART $*"; }
fail() { echo "$*" >/tmp/fail-reason; say "FAIL: $*"; exit 1; }
skip() { echo "$*" >/tmp/skip-reason; say "SKIP: $*"; exit 77; }

# arg NAME: value of NAME=... on the kernel command line
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -1; }

# rnd N: a random number in [0, N) (N up to 2^30; ash's RANDOM has 15 bits: two draws)
rnd() { echo $(( ((RANDOM << 15) | RANDOM) % $1 )); }

# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s
wait_for() {
    _n=$(( $1 * 5 ))
    shift
    while [ "$_n" -gt 0 ]; do
        "$@" 2>/dev/null && return 0
        sleep 0.2
        _n=$((_n - 1))
    done
    return 1
}

guest_setup() {
    set -e
    modprobe virtio_pci 2>/dev/null || true
    modprobe virtio_net
    modprobe 9pnet_virtio
    modprobe 9p
    ip link set lo up
    wait_for 10 ip link show eth0 >/dev/null
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    mount -t 9p -o trans=virtio,version=9p2000.L,cache=none share /share
    set +e
}

has_size() { [ "$(cat "/sys/block/$1/size" 2>/dev/null || echo 0)" -gt 0 ]; }

# nbd_connect HOST PORT DEV: the kernel client, export "lightnvm"; waits for the size
nbd_connect() {
    _try=0
    until /usr/sbin/nbd-client "$1" "$2" "$3" -N lightnvm -b 4096; do
        _try=$((_try + 1))
        [ "$_try" -lt 60 ] || return 1
        sleep 1
    done
    wait_for 30 has_size "${3#/dev/}"
}

nbd_disconnect() {
    /usr/sbin/nbd-client -d "$1" || return 1
    wait_for 30 sh -c "! [ \"\$(cat /sys/block/${1#/dev/}/size)\" -gt 0 ]"
}

# make_tree DIR: a tree of files with random contents (about 6 MiB), plus small ones
make_tree() {
    _d=0
    while [ $_d -lt 4 ]; do
        mkdir -p "$1/d$_d/sub"
        _f=0
        while [ $_f -lt 6 ]; do
            _kib=$(( ($(rnd 8) + 1) * 64 + $(rnd 64) ))
            head -c $((_kib * 1024 + $(rnd 4096))) /dev/urandom >"$1/d$_d/f$_f" || return 1
            head -c $(( $(rnd 8192) + 1 )) /dev/urandom >"$1/d$_d/sub/s$_f" || return 1
            _f=$((_f + 1))
        done
        _d=$((_d + 1))
    done
    : >"$1/empty"
}

# manifest DIR: "sha256  ./path" for every file, sorted
manifest() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs $SHA); }

# verify_tree DIR MANIFEST: every checksum matches and no file is missing or extra
verify_tree() {
    (cd "$1" && $SHA --quiet -c "$2") || return 1
    _want=$(wc -l <"$2")
    _have=$(cd "$1" && find . -type f | wc -l)
    [ "$_want" = "$_have" ] || { say "$_have files, manifest has $_want"; return 1; }
}

fsck_clean() { # DEV
    $E2FSCK -fn "$1" >/tmp/fsck.log 2>&1 && return 0
    cat /tmp/fsck.log
    return 1
}
