#!/usr/bin/env python3
"""A TCP sink for benchmarks: accepts connections on 127.0.0.1, reads and discards.

    sink.py --mode lines|pickle|decode --port-file FILE --result-file FILE

Writes its port to --port-file once listening. Serves connections one after another; after
each one closes (and no other is waiting), appends one result line to --result-file:

    conns=K bytes=B lines=L frames=F points=P first=T0 eof=T1 errors=E

counted over every connection so far. `lines` counts newlines (plaintext); in pickle mode
`frames` counts carbon pickle frames (4-byte big-endian length + body) and checks that the
stream is whole frames; in decode mode every frame is also unpickled and its points counted
(slow: for verification runs, not timed ones). T0 and T1 are time.time() of the first byte
and of the last EOF.
"""

import argparse
import os
import pickle
import select
import socket
import struct
import sys
import time

BUF = 4 << 20


def serve(conn, mode, totals):
    buf = bytearray(BUF)
    view = memoryview(buf)
    # Pickle framing state: bytes left in the current frame body, or a partial header.
    left = 0
    header = b""
    body = bytearray()
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        if totals["first"] is None:
            totals["first"] = time.time()
        totals["bytes"] += n
        if mode == "lines":
            totals["lines"] += buf.count(b"\n", 0, n)
            continue
        i = 0
        while i < n:
            if left == 0:
                need = 4 - len(header)
                header += bytes(view[i:i + need])
                i += min(need, n - i)
                if len(header) < 4:
                    break
                left = struct.unpack(">I", header)[0]
                header = b""
                if left == 0:
                    totals["errors"] += 1
                continue
            take = min(left, n - i)
            if mode == "decode":
                body += view[i:i + take]
            left -= take
            i += take
            if left == 0:
                totals["frames"] += 1
                if mode == "decode":
                    try:
                        points = pickle.loads(bytes(body))
                        totals["points"] += len(points)
                    except Exception as e:  # noqa: BLE001 - count any bad frame
                        print(f"sink: bad frame: {e}", file=sys.stderr)
                        totals["errors"] += 1
                    body = bytearray()
    if mode != "lines" and (left or header):
        totals["errors"] += 1  # the stream ended inside a frame


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["lines", "pickle", "decode"], default="lines")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--result-file", required=True)
    args = ap.parse_args()

    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{lst.getsockname()[1]}\n")
    os.rename(tmp, args.port_file)

    totals = dict(conns=0, bytes=0, lines=0, frames=0, points=0, errors=0, first=None, eof=None)
    while True:
        conn, _ = lst.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
        totals["conns"] += 1
        serve(conn, args.mode, totals)
        conn.close()
        totals["eof"] = time.time()
        # Report only when no other connection is waiting.
        ready, _, _ = select.select([lst], [], [], 0.05)
        if ready:
            continue
        with open(args.result_file, "a") as f:
            f.write(
                "conns={conns} bytes={bytes} lines={lines} frames={frames} points={points} "
                "first={first:.6f} eof={eof:.6f} errors={errors}\n".format(
                    **{**totals, "first": totals["first"] or totals["eof"]}
                )
            )


if __name__ == "__main__":
    main()
