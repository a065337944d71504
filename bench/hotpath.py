"""In-process cost of chatd's per-frame and per-recipient hot paths.

No sockets, no kernel: a ChatFactory on a task.Clock with transports that
drop what they are given, so the figures are the Python work alone.  Prints
ns per frame for ECHO runs, per SAY for plain and non-ASCII SAYs (the bulk
and frame-by-frame paths), and per delivery for a fan-out to N users.

    python bench/hotpath.py [--users 50] [--rounds 2000]

Runs against the chatd on sys.path (also a pre-reshape checkout, whose
modules had other names), so before/after can be compared side by side.
"""

from __future__ import annotations

import argparse
import struct
import time

from twisted.internet import address, task

try:  # after the core reshape
    from chatd.server.config import Config
    from chatd.server.factory import ChatFactory
except ImportError:  # before it
    from chatd.config import Config  # type: ignore[no-redef]
    from chatd.protocol import ChatFactory  # type: ignore[no-redef]

HEADER = struct.Struct("!II")


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


class NullTransport:
    """Takes writes and forgets them; enough of ITransport for chatd."""

    disconnecting = False

    def __init__(self, port: int) -> None:
        self.peer = address.IPv4Address("TCP", "127.0.0.1", port)
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, seq: list[bytes]) -> None:
        self.write(b"".join(seq))

    def getPeer(self) -> address.IPv4Address:
        return self.peer

    def getHost(self) -> address.IPv4Address:
        return self.peer

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True


def setup(users: int) -> tuple[task.Clock, list]:
    clock = task.Clock()
    factory = ChatFactory(Config(rate_limit=0), clock=clock)
    protos = []
    for i in range(users):
        proto = factory.buildProtocol(None)
        proto.makeConnection(NullTransport(10000 + i))
        proto.dataReceived(frame(2, b"u%d" % i) + frame(4))
        protos.append(proto)
    clock.advance(0)
    return clock, protos


def timed(label: str, unit: str, count: int, run) -> None:  # type: ignore[no-untyped-def]
    start = time.process_time()
    run()
    spent = time.process_time() - start
    print(f"{label:<40} {spent / count * 1e9:8.0f} ns per {unit}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2000)
    args = p.parse_args()
    rounds = args.rounds
    clock, protos = setup(args.users)
    sender = protos[0]
    echoes = b"".join(frame(1, b"e" * 16) for _ in range(16))
    timed(
        "echo, 16 x 16 B per read",
        "frame",
        16 * rounds,
        lambda: [sender.dataReceived(echoes) for _ in range(rounds)],
    )
    says = b"".join(frame(5, b"x" * 64) for _ in range(16))

    def fanout(chunk: bytes) -> None:
        for _ in range(rounds // 4):
            sender.dataReceived(chunk)
            clock.advance(0)

    deliveries = 16 * (rounds // 4) * len(protos)
    timed(
        f"fan-out plain SAY x{len(protos)}, 16 per read",
        "delivery",
        deliveries,
        lambda: fanout(says),
    )
    timed("  same, per SAY", "SAY", 16 * (rounds // 4), lambda: fanout(says))
    utf = b"".join(frame(5, "\u00e9".encode() * 32) for _ in range(16))
    timed(
        "  non-ASCII SAY (frame by frame), per SAY",
        "SAY",
        16 * (rounds // 4),
        lambda: fanout(utf),
    )
    one = frame(5, b"y" * 64)
    timed("  one SAY per read, per SAY", "SAY", rounds // 4,
          lambda: fanout(one))  # fmt: skip


if __name__ == "__main__":
    main()
