#!/usr/bin/env python3
"""Writes the seed corpus of the `nbd_session` fuzz target: whole client byte streams that
complete the fixed-newstyle handshake and then send transmission requests, so that the
fuzzer starts from sessions that reach the transmission phase.

    python3 fuzz/seeds/make_nbd_session_seeds.py      # writes fuzz/seeds/nbd_session/*
    cargo fuzz run nbd_session fuzz/seeds/nbd_session
"""
import os
import struct

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
FIXED_NEWSTYLE, NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 1, 3, 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
CMD_BLOCK_STATUS = 7
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES = 0, 1, 2, 3, 4, 6
FLAG_FUA = 1
NAME = b"lightnvm"


def option(opt, data=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def go(name=NAME, infos=()):
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
    data += b"".join(struct.pack(">H", i) for i in infos)
    return option(OPT_GO, data)


def meta_query(query):
    return struct.pack(">I", len(NAME)) + NAME + struct.pack(">II", 1, len(query)) + query


def request(cmd, offset=0, length=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + payload


def session(requests):
    return b"".join(requests) + request(CMD_DISC, cookie=99)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nbd_session")
    os.makedirs(out, exist_ok=True)
    block = bytes(range(256)) * 16
    io = [
        request(CMD_WRITE, 0, 4096, payload=block, cookie=1),
        request(CMD_READ, 0, 4096, cookie=2),
        request(CMD_WRITE, 8192, 8192, flags=FLAG_FUA, payload=block * 2, cookie=3),
        request(CMD_FLUSH, cookie=4),
        request(CMD_TRIM, 0, 4096, cookie=5),
        request(CMD_WRITE_ZEROES, 4096, 4096, cookie=6),
        request(CMD_READ, 512, 1024, cookie=7),
    ]
    seeds = {
        "go": struct.pack(">I", FIXED_NEWSTYLE | NO_ZEROES) + go(infos=(0, 3)) + session(io),
        "export_name": struct.pack(">I", FIXED_NEWSTYLE) + option(OPT_EXPORT_NAME, NAME) + session(io),
        "list_info_go": struct.pack(">I", FIXED_NEWSTYLE | NO_ZEROES)
        + option(OPT_LIST)
        + option(OPT_STRUCTURED_REPLY)
        + option(OPT_INFO, struct.pack(">I", len(NAME)) + NAME + struct.pack(">H", 0))
        + go()
        + session(io[:2]),
        "structured": struct.pack(">I", FIXED_NEWSTYLE | NO_ZEROES)
        + option(OPT_STRUCTURED_REPLY)
        + option(OPT_LIST_META_CONTEXT, meta_query(b"base:"))
        + option(OPT_SET_META_CONTEXT, meta_query(b"base:allocation"))
        + go()
        + session(io + [request(CMD_BLOCK_STATUS, 0, 65536, cookie=8)]),
        "errors": struct.pack(">I", FIXED_NEWSTYLE | NO_ZEROES)
        + go()
        + session(
            [
                request(CMD_READ, 1 << 40, 4096, cookie=10),
                request(CMD_WRITE, 3, 5, payload=b"x" * 5, cookie=11),
                request(CMD_READ, 0, 4096, flags=0x8000, cookie=12),
                request(99, 0, 0, cookie=13),
            ]
        ),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


if __name__ == "__main__":
    main()
