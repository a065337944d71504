"""Fairness: does one flooding connection slow everyone else down?

A probe client measures ECHO round trips, one at a time, first alone and
then while a flooder pipelines ECHO frames at full speed on its own
connection (reading its replies, so it is not a slow consumer).  The server
runs on core 0; probe and flooder share core 1.

    python bench/fairness.py [--rounds 3000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import threading
import time

from server import Server

HEADER = struct.Struct("!II")
ECHO = 1


def recvExactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the probe connection")
        data += chunk
    return bytes(data)


def probe(port: int, rounds: int) -> list[float]:
    """Round-trip times in seconds of ``rounds`` sequential 16-byte ECHOs."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = HEADER.pack(ECHO, 16) + b"p" * 16
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        sock.sendall(frame)
        recvExactly(sock, len(frame))
        times.append(time.perf_counter() - start)
    sock.close()
    return times


class Flooder:
    """Pipelines ECHO frames as fast as the socket takes them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.stop = threading.Event()
        self.sent = 0
        self.received = 0
        block = (HEADER.pack(ECHO, 100) + b"f" * 100) * 500
        self.threads = [
            threading.Thread(target=self._write, args=(block,), daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _write(self, block: bytes) -> None:
        try:
            while not self.stop.is_set():
                self.sock.sendall(block)
                self.sent += len(block)
        except OSError:
            pass

    def _read(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                self.received += len(data)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    with Server.chatd() as server:
        alone = summary(probe(server.port, args.rounds))
        flooder = Flooder(server.port)
        time.sleep(0.5)  # let the flood reach full speed before measuring
        flooded = summary(probe(server.port, args.rounds))
        flooder.close()
        mb = flooder.received / 1e6
    print(f"{'':18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, row in (("probe alone", alone), ("probe + flooder", flooded)):
        print(
            f"{label:18} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {row['max_ms']:8.3f}"
        )
    print(f"flooder echoed {mb:.1f} MB meanwhile")


if __name__ == "__main__":
    main()
