"""IRC fan-out beside TCP, in process: the same users, the same room, the
same SAYs from one TCP sender; ns of server CPU per delivery and the ratio
(issue target: IRC at least 0.5x TCP's deliveries per CPU second).

No sockets: a ChatFactory on a task.Clock, transports that drop what they
are given (bench/hotpath.py's), so the figures are the Python work alone.

    PYTHONPATH=. python bench/irc.py [--users 50] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from twisted.internet import task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hotpath import NullTransport, frame  # noqa: E402

from chatd.irc.protocol import IrcProtocol  # noqa: E402
from chatd.server.config import Config  # noqa: E402
from chatd.server.factory import ChatFactory  # noqa: E402


def run(users: int, rounds: int, irc: bool) -> float:
    """ns of CPU per delivery of 16-SAY reads from one TCP sender to
    ``users`` receivers (IRC or TCP ones)."""
    clock = task.Clock()
    factory = ChatFactory(
        Config(rate_limit=0, idle_timeout=0, handshake_timeout=0), clock=clock
    )
    sender = factory.buildProtocol(None)
    sender.makeConnection(NullTransport(9999))
    sender.dataReceived(frame(2, b"sender") + frame(4))
    for i in range(users):
        if irc:
            proto = IrcProtocol(factory, factory.connectionNumber())
            proto.makeConnection(NullTransport(10000 + i))
            proto.dataReceived(b"NICK u%d\r\nUSER u 0 * :u\r\n" % i)
        else:
            proto = factory.buildProtocol(None)
            proto.makeConnection(NullTransport(10000 + i))
            proto.dataReceived(frame(2, b"u%d" % i) + frame(4))
    clock.advance(0)
    says = b"".join(frame(5, b"x" * 64) for _ in range(16))
    start = time.process_time()
    for _ in range(rounds):
        sender.dataReceived(says)
        clock.advance(0)
    spent = time.process_time() - start
    return spent / (16 * rounds * (users + 1)) * 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2000)
    args = p.parse_args()
    tcp = run(args.users, args.rounds, irc=False)
    irc = run(args.users, args.rounds, irc=True)
    print(f"TCP receivers x{args.users}   {tcp:8.0f} ns per delivery")
    print(f"IRC receivers x{args.users}   {irc:8.0f} ns per delivery")
    print(f"IRC / TCP deliveries per CPU second: {tcp / irc:.2f}x (target >= 0.5x)")


if __name__ == "__main__":
    main()
