"""Fuzz a real daemon over real sockets while two users keep chatting.

K fuzz connections send random frames (random type 0..20, random or
protocol-shaped payloads, now and then an oversize header or torn bytes),
reconnecting whenever the server closes them, until F frames have gone out.
Meanwhile a watching pair (one sender, one receiver) chats and checks that
every message arrives once and in order.  Afterwards: no traceback in the
log, the daemon still answers, and its RSS is back near where it started.

    python bench/fuzz.py [--frames 1000000] [--connections 8]
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from server import HEADER, Server, frame

ECHO, HELLO, READY, SAY, MESSAGE, LEAVE, BYE = 1, 2, 4, 5, 6, 8, 17
SHAPED = [b"", b"fuzz", b"fuzz.pw", b"a.b.c", b"x" * 1016, b"\xff\xfe", b"\x1b[2J"]


def randomFrames(rng: random.Random, count: int) -> tuple[bytes, int]:
    """``count`` random frames as one block, and how many were whole frames."""
    parts = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.002:
            parts.append(HEADER.pack(SAY, rng.randint(1017, 2**32 - 1)))
        elif roll < 0.004:
            parts.append(rng.randbytes(rng.randint(1, 7)))  # torn: desyncs
        else:
            payload = (
                rng.choice(SHAPED)
                if rng.random() < 0.3
                else rng.randbytes(rng.randint(0, 64))
            )
            parts.append(frame(rng.randint(0, 20), payload))
    return b"".join(parts), count


class Fuzzer(threading.Thread):
    def __init__(self, port: int, seed: int, quota: int) -> None:
        super().__init__(daemon=True)
        self.port, self.rng, self.quota = port, random.Random(seed), quota
        self.sent = 0
        self.reconnects = 0

    def run(self) -> None:
        while self.sent < self.quota:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                time.sleep(0.01)
                continue
            # The server closes after a fatal error: its FIN (it keeps
            # reading for a while, so sending alone would not notice) or a
            # reset, whichever the reader or the sender meets first.
            ended = threading.Event()
            reader = threading.Thread(
                target=self._drain, args=(sock, ended), daemon=True
            )
            reader.start()
            try:
                while self.sent < self.quota and not ended.is_set():
                    block, n = randomFrames(self.rng, 500)
                    sock.sendall(block)
                    self.sent += n
                if ended.is_set():
                    self.reconnects += 1
            except OSError:
                self.reconnects += 1
            finally:
                sock.close()

    @staticmethod
    def _drain(sock: socket.socket, ended: threading.Event) -> None:
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass
        ended.set()


def readFrame(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    ftype, size = HEADER.unpack(head)
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return ftype, body


class Watchers(threading.Thread):
    """A sender and a receiver chatting; the receiver checks order and loss."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.sent = self.received = self.problems = 0
        self.port = port

    def _user(self, name: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(frame(HELLO, name) + frame(READY))
        readFrame(sock)  # WELCOME
        return sock

    def run(self) -> None:
        receiver = self._user(b"watch-rx")
        sender = self._user(b"watch-tx")
        reader = threading.Thread(target=self._receive, args=(receiver,), daemon=True)
        reader.start()
        while not self.stop.is_set():
            sender.sendall(frame(SAY, b"seq %d" % self.sent))
            self.sent += 1
            readFrame_until_message(sender)
            sender.sendall(frame(ECHO, b"keepalive"))
        # The receiver reads up to the sender's LEAVE: in the one total order,
        # every message of the sender comes before it.
        sender.sendall(frame(BYE))
        reader.join(10)
        sender.close()
        receiver.close()

    def _receive(self, sock: socket.socket) -> None:
        expected = 0
        try:
            while True:
                ftype, payload = readFrame(sock)
                if ftype == LEAVE and b".watch-tx." in payload:
                    return
                if ftype == MESSAGE and b".watch-tx." in payload:
                    seq = int(payload.rsplit(b"seq ", 1)[1])
                    if seq != expected:
                        self.problems += 1
                    expected = seq + 1
                    self.received += 1
        except (OSError, ConnectionError, ValueError):
            pass


def readFrame_until_message(sock: socket.socket) -> None:
    """The sender's own MESSAGE copy is its acknowledgement."""
    while True:
        ftype, payload = readFrame(sock)
        if ftype == MESSAGE and b".watch-tx." in payload:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logfile = Path(tempfile.mkdtemp()) / "chatd.log"
    # The watchers chat as fast as round trips go: no --rate-limit for them.
    options = ["--stats-interval", "5", "--rate-limit", "0"]
    with Server.chatd(*options, logfile=str(logfile)) as server:
        time.sleep(0.3)
        start_rss = server.rss()
        watchers = Watchers(server.port)
        watchers.start()
        quota = args.frames // args.connections
        fuzzers = [
            Fuzzer(server.port, args.seed + i, quota) for i in range(args.connections)
        ]
        began = time.monotonic()
        for f in fuzzers:
            f.start()
        for f in fuzzers:
            f.join()
        secs = time.monotonic() - began
        watchers.stop.set()
        watchers.join(10)
        time.sleep(0.5)  # let the daemon finish the closes before measuring
        probe = socket.create_connection(("127.0.0.1", server.port), 5)
        probe.sendall(frame(ECHO, b"alive?"))
        alive = readFrame(probe) == (ECHO, b"alive?")
        probe.close()
        end_rss = server.rss()
    log = logfile.read_text()
    sent = sum(f.sent for f in fuzzers)
    lost = watchers.sent - watchers.received
    print(f"fuzz frames sent:    {sent:,} in {secs:.1f}s ({sent / secs:,.0f}/s)")
    print(f"reconnects:          {sum(f.reconnects for f in fuzzers):,}")
    print(
        f"watchers:            {watchers.sent} sent, {watchers.received} received, "
        f"{watchers.problems} out of order, {lost} lost"
    )
    print(f"tracebacks in log:   {log.count('Traceback')}")
    print(f"daemon answers ECHO: {alive}")
    print(
        f"RSS:                 {start_rss / 2**20:.1f} MiB -> {end_rss / 2**20:.1f} MiB"
    )
    ok = (
        alive
        and "Traceback" not in log
        and watchers.problems == 0
        and lost == 0
        and end_rss < start_rss * 1.5 + 8 * 2**20
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
