"""Differential check: two chatd builds must answer the same input with
the same bytes.

Starts two daemons (``--a`` and ``--b`` are Python interpreters whose
``chatd`` differs, e.g. a checkout before a refactor and after it), plays
the same random scripts of frames from several connections against both,
and compares each connection's transcript byte for byte.  After every
frame sent, each connection still open is synced with a PING round trip
(replies come in request order), so transcripts do not depend on timing.

    python bench/differential.py --a old/.venv/bin/python --b .venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("!II")
NAMES = [b"alice", b"Bob", b"ALICE", b"carol", b"bad name", b"", b"x" * 33, b"d.pw"]
TEXTS = [b"hi", b"", b"a.b.c", "\u00e9t\u00e9".encode(), b"\x1b[31m", b"x" * 1000,
         b"\xff", "\u202e".encode(), b"tab\there"]  # fmt: skip


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def randomFrame(rng: random.Random) -> bytes:
    kind = rng.choice("HRSSSWwBEPUQ")
    if kind == "H":
        return frame(2, rng.choice(NAMES))
    if kind == "R":
        return frame(4)
    if kind == "S":
        return frame(5, rng.choice(TEXTS))
    if kind == "W":
        return frame(14, rng.choice(NAMES) + b"." + rng.choice(TEXTS))
    if kind == "w":
        return frame(12)
    if kind == "B":
        return frame(17)
    if kind == "E":
        return frame(1, rng.randbytes(rng.randrange(0, 40)))
    if kind == "P":
        return frame(10, b"unasked")
    if kind == "U":
        return frame(rng.choice([0, 3, 6, 11, 99]), b"x")
    return HEADER.pack(5, 5000)  # oversize header: fatal


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.data = b""
        self.open = True
        self.sync = 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.open = False

    def settle(self) -> None:
        """Read until our PING's PONG (or end of stream)."""
        if not self.open:
            return
        self.sync += 1
        token = b"sync%d" % self.sync
        self.send(frame(9, token))
        want = frame(10, token)
        buf = b""
        while self.open:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.open = False
                break
            buf += chunk
            if buf.endswith(want):
                buf = buf[: -len(want)]
                break
        self.data += buf


def script(seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    return [(rng.randrange(3), randomFrame(rng)) for _ in range(rng.randrange(5, 40))]


def play(port: int, steps: list[tuple[int, bytes]]) -> list[bytes]:
    conns = [Conn(port) for _ in range(3)]
    for c in conns:
        c.settle()
    for i, data in steps:
        conns[i].send(data)
        for c in conns:
            c.settle()
    out = []
    for c in conns:
        c.sock.close()
        out.append(c.data)
    return out


def start(python: str, where: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:  # a dev tool, not a test: a free port will do
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [python, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "chatd", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--stats-interval", "0", "--rate-limit", "0", "--max-per-ip", "0",
         "--idle-timeout", "0", "--handshake-timeout", "0"],
        cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{python}: daemon did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", default=sys.executable)
    p.add_argument("--scripts", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    servers = []
    for python in (args.a, args.b):
        # The checkout whose venv this is: its twisted/plugins has chatd.
        root = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(python)))
        )
        servers.append(start(python, root))
    try:
        differ = 0
        for n in range(args.seed, args.seed + args.scripts):
            steps = script(n)
            # Fresh daemons would renumber ids; instead both see the same
            # history, so ids and colours match as long as behaviour does.
            a = play(servers[0][1], steps)
            b = play(servers[1][1], steps)
            if a != b:
                differ += 1
                print(f"script {n} differs:")
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    if x != y:
                        print(f"  conn {i}:\n    a={x[:300]!r}\n    b={y[:300]!r}")
        print(f"{args.scripts} scripts, {differ} differ")
        sys.exit(1 if differ else 0)
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
