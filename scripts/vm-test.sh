#!/usr/bin/env bash
# Kernel-side tests in a QEMU guest (issue 11), for what the host kernel lacks (nbd.ko,
# ublk_drv, zoned NVMe):
#   nbd   the kernel NBD client against `lightnvm serve` on the host: ext4, checksummed tree,
#         e2fsck, then a SIGTERM restart of the server and every checksum verified again.
#   zns   `lightnvm format/serve /dev/nvme0n1` on a QEMU NVMe ZNS namespace inside the guest,
#         flushed writes through the kernel NBD client, guest resets mid-write (power cuts:
#         guest RAM lost, the device keeps what it completed), every flushed byte verified.
#   ublk  `lightnvm serve IMAGE --ublk` inside the guest: ext4 on /dev/ublkb0, fstrim,
#         e2fsck, SIGTERM + restart, checksums verified.
#   powercut  the zns test's power cuts over a file image on ext4 on a plain NVMe disk
#         (the server's fsyncs and recovery under real guest resets).
# Usage: scripts/vm-test.sh [nbd] [zns] [ublk] [powercut]   (default: all; a verdict line each)
# Environment: LIGHTNVM_VM_CACHE (kernel cache, default /var/cache/lightnvm-vm),
#   VM_ZNS_CYCLES (power cuts, default 3), VM_ZNS_REGIONS (1 MiB regions written, at most
#   60% of the export; default 24), VM_KEEP=1 (keep the work dir),
#   VM_TCG_THREAD (single, the default, or multi),
#   LIGHTNVM_VM_KERNEL_PKG (a Debian kernel package name instead of the newest 6.12 one),
#   LIGHTNVM_BIN (the lightnvm binary; default target/release/lightnvm, built when missing).
# Needs root and apt (installs qemu-system-x86, busybox-static, kmod, cpio, nbd-client,
# e2fsprogs, util-linux, coreutils, xz-utils, zstd when missing). Changes nothing global on
# the host besides those packages: the kernel .deb is fetched with a private apt config.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
B="${LIGHTNVM_BIN:-$ROOT/target/release/lightnvm}"
CACHE="${LIGHTNVM_VM_CACHE:-/var/cache/lightnvm-vm}"
ZNS_CYCLES="${VM_ZNS_CYCLES:-3}"
ZNS_REGIONS="${VM_ZNS_REGIONS:-24}"
# One host thread runs both vCPUs: with thread=multi the 6.12 guest sometimes dies at boot with
# "Oops: int3" in sched_clock_cpu (a patched static branch executed from a stale translation:
# cross-vCPU code modification under MTTCG), seen once in about ten boots on a loaded host.
TCG_THREAD="${VM_TCG_THREAD:-single}"
KSERIES="6.12"
T0=$SECONDS

log() { echo "vm-test: $*"; }
die() { echo "vm-test: error: $*" >&2; exit 2; }

PARTS=()
for a in "$@"; do
    case "$a" in
        nbd | zns | ublk | powercut) PARTS+=("$a") ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown part '$a' (nbd, zns, ublk, powercut)" ;;
    esac
done
((${#PARTS[@]})) || PARTS=(nbd zns ublk powercut)
[[ $(id -u) -eq 0 ]] || die "run as root (apt, and the kernel cache in $CACHE)"
[[ "$ZNS_CYCLES" =~ ^[0-9]+$ ]] || die "VM_ZNS_CYCLES must be a number"
[[ "$ZNS_REGIONS" =~ ^[0-9]+$ && "$ZNS_REGIONS" -ge 1 ]] || die "VM_ZNS_REGIONS must be a positive number"

# ---------------------------------------------------------------- host packages
# package:a file it provides (checked instead of dpkg -s, quicker and robust to renames)
host_pkgs=(qemu-system-x86:/usr/bin/qemu-system-x86_64 busybox-static:/bin/busybox
    kmod:/usr/sbin/depmod cpio:/usr/bin/cpio nbd-client:/usr/sbin/nbd-client
    e2fsprogs:/usr/sbin/mke2fs util-linux:/usr/sbin/blkdiscard coreutils:/usr/bin/dd
    xz-utils:/usr/bin/xz zstd:/usr/bin/zstd)
need=()
for pf in "${host_pkgs[@]}"; do
    [[ -e "${pf#*:}" ]] || need+=("${pf%%:*}")
done
# /bin/busybox may be the dynamic build (package busybox): the guest needs the static one.
if [[ "$(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null)" != *" installed" ]]; then
    [[ " ${need[*]} " == *" busybox-static "* ]] || need+=(busybox-static)
fi
# Debian's qemu-system-x86 (7.2, what the VM suite was measured with) cannot sit beside a
# newer qemu-utils (these machines come with backports' 10.0, which Breaks
# qemu-system-common < 8.0): ask for qemu-utils at qemu-system-x86's version, downgrading it,
# so qemu-img and qemu-io stay installed.
with_qemu=0
[[ " ${need[*]} " == *" qemu-system-x86 "* ]] && with_qemu=1
if ((${#need[@]})); then
    log "installing ${need[*]}"
    ok=0
    for i in 1 2 3; do
        pkgs=("${need[@]}")
        if apt-get update -qq; then
            if ((with_qemu)); then
                v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
                pkgs+=("qemu-utils${v:+=$v}")
            fi
            if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                --allow-downgrades "${pkgs[@]}" >/dev/null; then
                ok=1; break
            fi
        fi
        log "apt-get failed (attempt $i of 3); retrying in $((i * 10)) s"
        sleep $((i * 10))
    done
    ((ok)) || die "could not install ${need[*]} with apt-get"
fi

if [[ ! -x "$B" && -z "${LIGHTNVM_BIN:-}" ]]; then
    log "building the release binary"
    cargo build --release --quiet -p lightnvm-cli --features ublk
fi

[[ -x "$B" ]] || die "no lightnvm binary at $B"

# ---------------------------------------------------------------- guest kernel (cached)
# bookworm-backports through a private apt configuration: the host's sources stay as they are.
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE/debs"
cat >"$APT/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
EOF
apt_private=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root
    -o Acquire::Retries=3)

with_retries() { # what, command...: 4 attempts, 10/20/40 s apart
    local what="$1" i
    shift
    for i in 1 2 3 4; do
        "$@" && return 0
        ((i < 4)) || break
        log "$what failed (attempt $i of 4); retrying in $((5 << i)) s"
        sleep $((5 << i))
    done
    die "$what failed 4 times: is deb.debian.org reachable? (cache: $CACHE)"
}

kernel_fetch() {
    local pkg="${LIGHTNVM_VM_KERNEL_PKG:-}" deb
    # Reuse the newest cached kernel unless a package was named or none is cached.
    if [[ -z "$pkg" ]]; then
        deb=$(ls -1 "$CACHE"/debs/linux-image-"$KSERIES".*+deb12-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -1 || true)
        if [[ -n "$deb" ]]; then
            KDEB="$deb"
            return
        fi
        log "fetching the guest kernel (Debian bookworm-backports, linux-image-$KSERIES.*-amd64-unsigned)"
        with_retries "apt-get update (bookworm-backports)" apt-get -qq "${apt_private[@]}" update
        pkg=$(apt-cache "${apt_private[@]}" pkgnames linux-image-"$KSERIES". |
            grep -E "^linux-image-$KSERIES\.[0-9]+\+deb12-amd64-unsigned$" | sort -V | tail -1 || true)
        [[ -n "$pkg" ]] || die "no linux-image-$KSERIES.*+deb12-amd64-unsigned in bookworm-backports (set LIGHTNVM_VM_KERNEL_PKG)"
    else
        deb=$(ls -1 "$CACHE"/debs/"$pkg"_*.deb 2>/dev/null | tail -1 || true)
        if [[ -n "$deb" ]]; then
            KDEB="$deb"
            return
        fi
        with_retries "apt-get update (bookworm-backports)" apt-get -qq "${apt_private[@]}" update
    fi
    (cd "$CACHE/debs" && with_retries "apt-get download $pkg" apt-get -qq "${apt_private[@]}" download "$pkg")
    KDEB=$(ls -1 "$CACHE"/debs/"$pkg"_*.deb | tail -1)
}

# vmlinux from a bzImage: find a compressed stream's magic, decompress from there, keep the
# first result that is an ELF file (QEMU boots it through the PVH entry point).
extract_vmlinux() {
    local bz="$1" out="$2" magic tool off
    for mt in '\x28\xb5\x2f\xfd:zstd -dcq' '\xfd\x37\x7a\x58\x5a\x00:xz -dcq' '\x1f\x8b\x08:gzip -dcq'; do
        magic="${mt%%:*}"
        tool="${mt#*:}"
        for off in $(LC_ALL=C grep -obUaP "$magic" "$bz" 2>/dev/null | cut -d: -f1 | head -5); do
            tail -c +$((off + 1)) "$bz" | $tool >"$out.tmp" 2>/dev/null || true
            if [[ "$(head -c 4 "$out.tmp" 2>/dev/null | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]]; then
                mv "$out.tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.tmp"
    return 1
}

kernel_prepare() {
    kernel_fetch
    local ver
    ver=$(dpkg-deb -f "$KDEB" Version)
    KDIR="$CACHE/kernel/$(basename "$KDEB" .deb)"
    if [[ ! -f "$KDIR/ok" ]]; then
        log "unpacking $(basename "$KDEB")"
        rm -rf "$KDIR"
        mkdir -p "$KDIR"
        dpkg-deb -x "$KDEB" "$KDIR/root"
        KV=$(ls "$KDIR/root/lib/modules" | head -1)
        depmod -b "$KDIR/root" "$KV"
        extract_vmlinux "$KDIR/root/boot/vmlinuz-$KV" "$KDIR/vmlinux" || die "no ELF vmlinux found in vmlinuz-$KV"
        rm -rf "$KDIR/root/boot" "$KDIR/root/usr"
        echo "$KV" >"$KDIR/ok"
    fi
    KV=$(cat "$KDIR/ok")
    KMOD="$KDIR/root/lib/modules/$KV"
    log "guest kernel $KV (package $ver)"
}

# ---------------------------------------------------------------- initramfs
# busybox, the modules the parts load (decompressed, with their dependencies), host tools
# and the libraries ldd lists, the lightnvm binary, the guest scripts.
GUEST_MODULES=(nbd ublk_drv nvme nvme_core virtio_pci virtio_net 9p 9pnet_virtio ext4 crc32c_generic
    crc16 af_packet)
GUEST_BINS=(/usr/sbin/nbd-client /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/fstrim
    /usr/sbin/blkdiscard /usr/sbin/blkzone /usr/sbin/blockdev /usr/bin/dd /usr/bin/cmp /usr/bin/split
    /usr/bin/sha256sum /usr/bin/timeout /usr/bin/kmod)

copy_with_libs() { # root, binary...
    local r="$1" f l
    shift
    for f in "$@"; do
        mkdir -p "$r$(dirname "$f")"
        cp -L "$f" "$r$f"
        for l in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true); do
            [[ -e "$r$l" ]] && continue
            mkdir -p "$r$(dirname "$l")"
            cp -L "$l" "$r$l"
        done
    done
}

build_initramfs() {
    local r="$WORK/initramfs" m p
    rm -rf "$r"
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,share,lib/modules/"$KV"/kernel,vmtest}
    mknod -m 600 "$r/dev/console" c 5 1
    cp /bin/busybox "$r/bin/busybox"
    copy_with_libs "$r" "${GUEST_BINS[@]}" "$B"
    mv "$r$B" "$r/usr/bin/lightnvm"
    # Debug info is most of the binary; the guest loads the initramfs faster without it.
    if command -v strip >/dev/null; then strip --strip-debug "$r/usr/bin/lightnvm"; fi
    rmdir -p "$r$(dirname "$B")" 2>/dev/null || true
    # That may have taken the skeleton's own directories with it (a binary under /tmp/...).
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,share}
    ln -sf mke2fs "$r/usr/sbin/mkfs.ext4"
    for m in modprobe insmod lsmod rmmod depmod; do ln -sf ../usr/bin/kmod "$r/sbin/$m"; done
    for p in $(/bin/busybox --list-full); do
        [[ -e "$r/$p" || -L "$r/$p" ]] && continue
        mkdir -p "$r/$(dirname "$p")"
        ln -s /bin/busybox "$r/$p"
    done
    [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$r/etc/"
    # Modules: every file `modprobe --show-depends` names, decompressed; depmod in the tree.
    for m in "${GUEST_MODULES[@]}"; do
        modprobe -d "$KDIR/root" -S "$KV" --show-depends "$m" 2>/dev/null |
            awk '$1 == "insmod" { print $2 }'
    done | sort -u | while read -r p; do
        local rel="${p#"$KDIR/root"}" dst
        dst="$r${rel%.xz}"
        dst="${dst%.zst}"
        mkdir -p "$(dirname "$dst")"
        case "$p" in
            *.xz) xz -dc "$p" >"$dst" ;;
            *.zst) zstd -dcq "$p" >"$dst" ;;
            *) cp "$p" "$dst" ;;
        esac
    done
    cp "$KMOD"/modules.{order,builtin,builtin.modinfo} "$r/lib/modules/$KV/" 2>/dev/null || true
    depmod -b "$r" "$KV"
    cp "$ROOT"/scripts/vm/*.sh "$r/vmtest/"
    cp "$ROOT/scripts/vm/init" "$r/init"
    chmod +x "$r/init" "$r"/vmtest/*.sh
    (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$WORK/initramfs.cpio"
}

# ---------------------------------------------------------------- running the guest
QEMU_PID=""
SERVER=""
cleanup() {
    set +e
    [[ -n "$QEMU_PID" ]] && kill -9 "$QEMU_PID" 2>/dev/null
    [[ -n "$SERVER" ]] && kill -9 "$SERVER" 2>/dev/null
    wait 2>/dev/null
    if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
        if [[ "${VM_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_qemu NAME TIMEOUT_S "KERNEL ARGS" [extra qemu args...]: console in $WORK/NAME.log
start_qemu() {
    local name="$1" tmo="$2" args="$3"
    shift 3
    local reboot=(-no-reboot)
    [[ "${QEMU_ALLOW_REBOOT:-0}" == 1 ]] && reboot=()
    : >"$WORK/$name.log" # polled before qemu writes to it
    timeout -s KILL "$tmo" qemu-system-x86_64 -accel "tcg,thread=$TCG_THREAD" -cpu max -m 1024 -smp 2 \
        -nographic "${reboot[@]}" -nodefaults -serial stdio -monitor none \
        -kernel "$KDIR/vmlinux" -initrd "$WORK/initramfs.cpio" \
        -append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic nowatchdog $args" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
        -virtfs "local,path=$WORK/share,mount_tag=share,security_model=none" \
        "$@" </dev/null >"$WORK/$name.log" 2>&1 &
    QEMU_PID=$!
}

wait_qemu() { # -> exit status of the qemu run (137 when the timeout killed it)
    local rc=0
    wait "$QEMU_PID" || rc=$?
    QEMU_PID=""
    return $rc
}

console() { tr -d '\r' <"$WORK/$1.log"; }

# wait_for NAME PATTERN SECONDS: until the console shows PATTERN (0), qemu exits (1) or time
# runs out (2).
wait_for() {
    local name="$1" pat="$2" end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        console "$name" | grep -qE "$pat" && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || { console "$name" | grep -qE "$pat" && return 0; return 1; }
        sleep 0.5
    done
    return 2
}

result_of() { # NAME PART -> PASS / FAIL / SKIP / "" from the guest's marker
    console "$1" | sed -n "s/^VMTEST-RESULT $2 \([A-Z]*\).*/\1/p" | tail -1
}

show_tail() {
    echo "---- guest console ($1, last ${2:-40} lines) ----"
    console "$1" | tail -n "${2:-40}"
    echo "----"
}

FAILS=0
verdict() { # PART PASS|FAIL|SKIP detail
    [[ "$2" == FAIL ]] && FAILS=$((FAILS + 1))
    echo "vm-test: PART $1 $2${3:+ ($3)}"
}

# ---------------------------------------------------------------- part: nbd
start_server() {
    "$B" serve "$WORK/nbd.img" --listen "127.0.0.1:$PORT" --no-control >>"$WORK/serve.log" 2>&1 &
    SERVER=$!
    local i
    for i in $(seq 150); do
        grep -q "listening on" "$WORK/serve.log" 2>/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

stop_server() { # SIGTERM, must exit 0
    local rc=0
    kill -TERM "$SERVER"
    wait "$SERVER" || rc=$?
    SERVER=""
    return $rc
}

part_nbd() {
    local t=$SECONDS why=""
    PORT=$((20000 + RANDOM % 20000))
    rm -rf "$WORK/share" && mkdir -p "$WORK/share"
    rm -f "$WORK/serve.log.1" && : >"$WORK/serve.log"
    "$B" format "$WORK/nbd.img" --preset default >"$WORK/format.log" 2>&1 || { verdict nbd FAIL "format: $(tail -1 "$WORK/format.log")"; return; }
    local try
    for try in 1 2 3; do # a random port may be taken
        start_server && break
        [[ -n "$SERVER" ]] && { kill -9 "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; SERVER=""; }
        ((try < 3)) || { verdict nbd FAIL "server did not start: $(tail -1 "$WORK/serve.log")"; return; }
        PORT=$((20000 + RANDOM % 20000))
        : >"$WORK/serve.log"
    done
    start_qemu nbd 420 "vmtest=nbd vmtest_port=$PORT"
    # The guest asks for a server restart between its two phases, then waits for share/restarted.
    if wait_for nbd '^VMTEST-STEP nbd restart-server|^VMTEST-RESULT nbd' 300 && console nbd | grep -q '^VMTEST-STEP nbd restart-server'; then
        if stop_server; then
            grep -q "stopped cleanly" "$WORK/serve.log" || why="no clean stop in the server log"
            : >"$WORK/serve.log.1" && cat "$WORK/serve.log" >>"$WORK/serve.log.1" && : >"$WORK/serve.log"
            if start_server; then
                echo ok >"$WORK/share/restarted"
            else
                why="server did not restart"
                echo fail >"$WORK/share/restarted"
            fi
        else
            why="server exited non-zero after SIGTERM"
            echo fail >"$WORK/share/restarted"
        fi
    fi
    wait_qemu || true
    local r
    r=$(result_of nbd nbd)
    if [[ -n "$SERVER" ]]; then
        stop_server || why="${why:-server exited non-zero after the final SIGTERM}"
        grep -q "opened .* (clean)" "$WORK/serve.log" || why="${why:-the restarted server did not open the image clean}"
        grep -q "stopped cleanly" "$WORK/serve.log" || why="${why:-no clean stop of the restarted server}"
    fi
    if [[ "$r" == PASS && -z "$why" ]]; then
        verdict nbd PASS "$(console nbd | sed -n 's/^VMTEST-INFO nbd //p' | tail -1); $((SECONDS - t)) s"
    else
        show_tail nbd 60
        echo "---- server log (last 20 lines) ----"; cat "$WORK/serve.log.1" "$WORK/serve.log" 2>/dev/null | tail -20; echo "----"
        verdict nbd FAIL "${why:-guest said ${r:-nothing (timeout or crash)}}; $((SECONDS - t)) s"
    fi
}

# ---------------------------------------------------------------- parts: zns, powercut
# run_cuts PART BACKEND QEMU-DEVICE-ARGS...: the power-cut guest script (scripts/vm/zns.sh).
# The guest cuts power itself by resetting the VM (sysrq b, no sync): guest RAM - the
# server's buffers, the page cache - is lost, QEMU's NVMe device keeps what it completed. The
# zones' write pointers live in the QEMU process only (a new QEMU process reports every zone
# empty), so one QEMU process runs all the cycles, rebooting the guest.
run_cuts() {
    local part="$1" backend="$2" t=$SECONDS
    shift 2
    rm -rf "$WORK/share" && mkdir -p "$WORK/share"
    QEMU_ALLOW_REBOOT=1 start_qemu "$part" $((300 + ZNS_CYCLES * 150)) \
        "vmtest=zns vmtest_cycles=$ZNS_CYCLES vmtest_regions=$ZNS_REGIONS vmtest_backend=$backend" "$@"
    wait_qemu || true
    local r survived
    r=$(result_of "$part" zns)
    survived=$(console "$part" | grep -c '^VMTEST-STEP zns verified' || true)
    case "$r" in
        PASS) verdict "$part" PASS "$survived of $ZNS_CYCLES power cuts survived with 0 flushed writes lost; $(console "$part" | sed -n 's/^VMTEST-INFO zns //p' | tail -1); $((SECONDS - t)) s" ;;
        SKIP) verdict "$part" SKIP "$(console "$part" | sed -n 's/^VMTEST-RESULT zns SKIP //p' | tail -1)" ;;
        *) show_tail "$part" 80; verdict "$part" FAIL "${r:-no result (timeout or crash)}; $survived of $ZNS_CYCLES power cuts survived; $((SECONDS - t)) s" ;;
    esac
}

part_zns() {
    if ! "$B" format --help 2>&1 | grep -qiE 'zoned|zns'; then
        verdict zns SKIP "lightnvm format does not support zoned devices yet (no 'zoned' in lightnvm format --help)"
        return
    fi
    # 256 MiB namespace: 64 zones of 4 MiB.
    truncate -s 256M "$WORK/zns.raw"
    run_cuts zns zoned -drive "file=$WORK/zns.raw,id=zns,format=raw,if=none" \
        -device nvme,id=nvme0,serial=lightnvm-zns \
        -device "nvme-ns,drive=zns,bus=nvme0,nsid=1,zoned=true,zoned.zone_size=4M,zoned.zone_capacity=4M,zoned.max_open=16,zoned.max_active=32"
    rm -f "$WORK/zns.raw"
}

part_powercut() {
    # The same cuts over a file image (64 MiB of flash) on ext4 on a plain NVMe namespace.
    truncate -s 512M "$WORK/disk.raw"
    run_cuts powercut file -drive "file=$WORK/disk.raw,id=disk,format=raw,if=none" \
        -device nvme,id=nvme0,serial=lightnvm-disk -device nvme-ns,drive=disk,bus=nvme0,nsid=1
    rm -f "$WORK/disk.raw"
}

# ---------------------------------------------------------------- part: ublk
part_ublk() {
    local t=$SECONDS
    if ! "$B" serve --help 2>&1 | grep -q -- '--ublk'; then
        verdict ublk SKIP "lightnvm serve has no --ublk yet"
        return
    fi
    rm -rf "$WORK/share" && mkdir -p "$WORK/share"
    start_qemu ublk 420 "vmtest=ublk"
    wait_qemu || true
    local r
    r=$(result_of ublk ublk)
    case "$r" in
        PASS) verdict ublk PASS "$(console ublk | sed -n 's/^VMTEST-INFO ublk //p' | tail -1); $((SECONDS - t)) s" ;;
        SKIP) verdict ublk SKIP "$(console ublk | sed -n 's/^VMTEST-RESULT ublk SKIP //p' | tail -1)" ;;
        *) show_tail ublk 60; verdict ublk FAIL "${r:-no result (timeout or crash)}; $((SECONDS - t)) s" ;;
    esac
}

# ---------------------------------------------------------------- main
exec 9>"$CACHE/.lock" # concurrent runs share the kernel cache
flock 9
kernel_prepare
flock -u 9
WORK=$(mktemp -d /tmp/lightnvm-vm-XXXXXX)
build_initramfs
log "initramfs $(($(stat -c %s "$WORK/initramfs.cpio") >> 20)) MiB, setup took $((SECONDS - T0)) s; parts: ${PARTS[*]}"
for p in "${PARTS[@]}"; do
    "part_$p"
done
log "done in $((SECONDS - T0)) s"
((FAILS == 0)) || { log "$FAILS part(s) failed"; exit 1; }
