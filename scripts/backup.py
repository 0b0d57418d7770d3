#!/usr/bin/python3
"""Full and incremental backups of an NBD export with lightnvm's changed-block tracking.

Uses only libnbd (Debian: python3-libnbd) and the `qemu:dirty-bitmap:MARK` block status
context `lightnvm serve` offers for each mark (as `qemu-nbd -B` does), so it works against any
server that exports dirty bitmaps that way.

    # 1. mark first, then copy: whatever is written during the copy is in the next increment
    lightnvm mark create lightnvm.img m1
    scripts/backup.py full nbd://127.0.0.1:10809 backup/full.img
    # 2. later: a new mark, then only what changed since the previous one
    lightnvm mark create lightnvm.img m2
    scripts/backup.py incr nbd://127.0.0.1:10809 --since m1 backup/incr-1
    lightnvm mark delete lightnvm.img m1            # optional: m2 is the base from now on
    # 3. restore: the full copy, then every increment in order
    scripts/backup.py restore restored.img backup/full.img backup/incr-1 [backup/incr-2 ...]

An increment is two files: NAME.json (export size, mark, changed extents) and NAME.bin (the
changed bytes, extent after extent). A copy taken while clients write is as of no single
instant (there are no snapshots); the next increment carries whatever changed meanwhile, so a
chain ending in an increment taken while the export is quiet restores it exactly.
"""

import argparse
import json
import os
import sys

import nbd

CHUNK = 4 << 20  # bytes per read request
STATUS_SPAN = 1 << 30  # bytes per block status request
HOLE = 1  # base:allocation flag: unallocated (reads as zeros)
DIRTY = 1  # qemu:dirty-bitmap flag: changed since the mark


def connect(uri, context):
    h = nbd.NBD()
    h.add_meta_context(context)
    h.connect_uri(uri)
    if not h.can_meta_context(context):
        sys.exit(f"backup.py: the server offers no {context} context")
    return h


def extents(h, context, want):
    """Byte ranges (offset, length) whose `context` flags satisfy `want`, merged."""
    size = h.get_size()
    out = []
    off = 0
    while off < size:
        got = []

        def cb(meta, start, entries, err):
            if meta == context:
                got.extend(zip(entries[0::2], entries[1::2]))
            return 0

        h.block_status(min(STATUS_SPAN, size - off), off, cb)
        if not got:
            sys.exit(f"backup.py: empty block status at {off}")
        for length, flags in got:
            length = min(length, size - off)
            if want(flags):
                if out and out[-1][0] + out[-1][1] == off:
                    out[-1] = (out[-1][0], out[-1][1] + length)
                else:
                    out.append((off, length))
            off += length
            if off >= size:
                break
    return out


def copy_ranges(h, ranges, write):
    for off, length in ranges:
        done = 0
        while done < length:
            n = min(CHUNK, length - done)
            write(off + done, h.pread(n, off + done))
            done += n


def full(a):
    h = connect(a.uri, "base:allocation")
    size = h.get_size()
    data = extents(h, "base:allocation", lambda f: not f & HOLE)
    with open(a.out, "wb") as f:
        f.truncate(size)

        def write(off, b):
            f.seek(off)
            f.write(b)

        copy_ranges(h, data, write)
    total = sum(n for _, n in data)
    print(f"full: {total} of {size} bytes hold data, copied to {a.out}")


def incr(a):
    context = "qemu:dirty-bitmap:" + a.since
    h = connect(a.uri, context)
    size = h.get_size()
    dirty = extents(h, context, lambda f: f & DIRTY)
    with open(a.out + ".bin", "wb") as f:
        copy_ranges(h, dirty, lambda off, b: f.write(b))
    with open(a.out + ".json", "w") as f:
        json.dump({"size": size, "since": a.since, "extents": dirty}, f)
    total = sum(n for _, n in dirty)
    print(f"incr: {total} bytes changed since {a.since} in {len(dirty)} extents, "
          f"copied to {a.out}.bin")


def restore(a):
    size = os.path.getsize(a.full)
    with open(a.full, "rb") as src, open(a.out, "wb") as dst:
        dst.truncate(size)
        while True:
            off = src.tell()
            b = src.read(CHUNK)
            if not b:
                break
            if b.count(0) != len(b):  # keep the restored image sparse
                dst.seek(off)
                dst.write(b)
        for inc in a.increments:
            with open(inc + ".json") as f:
                meta = json.load(f)
            if meta["size"] != size:
                sys.exit(f"backup.py: {inc} is of a {meta['size']}-byte export, "
                         f"the full copy of {size}")
            with open(inc + ".bin", "rb") as data:
                for off, length in meta["extents"]:
                    dst.seek(off)
                    dst.write(data.read(length))
    print(f"restore: {a.out} from {a.full} and {len(a.increments)} increment(s)")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("full", help="copy the export (holes stay holes)")
    f.add_argument("uri")
    f.add_argument("out")
    i = sub.add_parser("incr", help="copy what changed since a mark")
    i.add_argument("uri")
    i.add_argument("--since", required=True)
    i.add_argument("out", help="writes OUT.json and OUT.bin")
    r = sub.add_parser("restore", help="rebuild an image from a full copy and increments")
    r.add_argument("out")
    r.add_argument("full")
    r.add_argument("increments", nargs="*")
    a = p.parse_args()
    {"full": full, "incr": incr, "restore": restore}[a.cmd](a)


if __name__ == "__main__":
    main()
