"""In-process cost of fan-out in rooms (protocol 1.2) against 1.1's one room.

In the style of bench/hotpath.py: a ChatFactory on a task.Clock with
transports that drop what they are given, so the figures are the Python
work alone.  Every sender's read holds 16 SAYs (or ROOM_SAYs) and each read
is followed by one reactor turn.  Prints ns per delivery and deliveries/s:

  (a) 1 room x 100 users, 1.1 SAY: today's path, the baseline
  (b) 100 rooms x 10 users, one sender per room, ROOM_SAY
  (c) 1,000 rooms x 5 users, 1% of the users sending, ROOM_SAY
  (d) one user in 20 rooms of 10 members, each ROOM_SAY to the next room

and the memory of an idle room (tracemalloc: 1,000 rooms of one member).
Each run checks that it delivered what it claims: the bytes written to
every user are the probe frame's bytes times the SAYs sent.

    python bench/rooms.py [--deliveries 1000000]

Runs against the chatd on sys.path; one without rooms runs (a) only.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import struct
import time
import tracemalloc
from collections.abc import Callable

from hotpath import NullTransport, frame
from twisted.internet import task

from chatd.server.config import Config
from chatd.server.factory import ChatFactory

HEADER = struct.Struct("!II")
HELLO, READY, SAY, MESSAGE = 2, 4, 5, 6
VERSION, ENTER, ROOM_SAY, ROOM_MESSAGE, ROOM_JOIN = 18, 19, 21, 22, 23
#: SAYs per read, and the text of each.
BATCH = 16
TEXT = b"x" * 64


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (type, payload) frames in ``data``."""
    out, at = [], 0
    while at < len(data):
        ftype, size = HEADER.unpack_from(data, at)
        out.append((ftype, data[at + 8 : at + 8 + size]))
        at += 8 + size
    return out


class Server:
    """One ChatFactory on a task.Clock, and the users connected to it."""

    def __init__(self, **config: object) -> None:
        self.clock = task.Clock()
        # No idle or handshake timers: task.Clock sorts every pending call
        # on each callLater, which with thousands of users would be the cost.
        wanted = {
            "max_clients": 100_000,
            "max_rooms": 100_000,
            "idle_timeout": 0,
            "handshake_timeout": 0,
            **config,
        }
        known = {f.name for f in dataclasses.fields(Config)}  # a 1.1 chatd's too
        options = {k: v for k, v in wanted.items() if k in known}
        self.factory = ChatFactory(Config(rate_limit=0, **options), clock=self.clock)
        self.users: list = []

    def connect(self, n: int, rooms12: bool) -> list:
        """``n`` more ACTIVE users (speaking 1.2 if ``rooms12``)."""
        made = []
        for _ in range(n):
            i = len(self.users)
            proto = self.factory.buildProtocol(None)
            proto.makeConnection(Recorder(10000 + i % 50000))
            proto.dataReceived(frame(HELLO, b"u%d" % i) + frame(READY))
            if rooms12:
                proto.dataReceived(frame(VERSION, b"1.2"))
            self.users.append(proto)
            made.append(proto)
        self.clock.advance(0)
        return made

    def speaks12(self) -> bool:
        """Whether this chatd answers VERSION 1.2 (one probe user)."""
        (user,) = self.connect(1, rooms12=False)
        return (VERSION, b"1.2") in self.ask(user, frame(VERSION, b"1.2"))

    def ask(self, user, data: bytes) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
        """The frames ``user`` gets for ``data`` (and one reactor turn)."""
        user.transport.data = bytearray()
        user.dataReceived(data)
        self.clock.advance(0)
        return heard(user)

    def enter(self, user, room: bytes) -> None:  # type: ignore[no-untyped-def]
        """``user`` enters ``room``; an error is fatal (nothing to measure)."""
        got = self.ask(user, frame(ENTER, room))
        if not any(t == ROOM_JOIN and p.startswith(room + b".") for t, p in got):
            raise SystemExit(f"ENTER {room!r} got {got[:3]!r}")

    def written(self) -> int:
        return sum(u.transport.written for u in self.users)


class Recorder(NullTransport):
    """A NullTransport that keeps what it is given while :attr:`data` is a
    bytearray (to check what the server answered, outside the timing)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.data: bytearray | None = None

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.data is not None:
            self.data += data


def heard(user) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
    """The frames ``user``'s Recorder kept; it keeps nothing more."""
    got = frames(bytes(user.transport.data or b""))
    user.transport.data = None
    return got


#: What one read of a sender is: (the sender, the read's bytes).
Read = tuple[object, bytes]


def measure(
    server: Server, label: str, reads: list[Read], members: int, deliveries: int
) -> None:
    """Time ``reads`` over and over (one reactor turn after each) for about
    ``deliveries`` deliveries (``members`` per SAY); print ns per delivery
    and deliveries/s."""
    clock = server.clock

    def once() -> None:
        for user, data in reads:
            user.dataReceived(data)  # type: ignore[attr-defined]
            clock.advance(0)

    for user in server.users:
        user.transport.data = bytearray()
    before = server.written()
    once()  # the probe: what one pass delivers, and its bytes
    perPass = server.written() - before
    perSay = sum(len(frames(data)) for _user, data in reads)
    got = [t for user in server.users for t, _ in heard(user)]
    if len(got) != perSay * members or set(got) - {MESSAGE, ROOM_MESSAGE}:
        raise SystemExit(f"{label}: {len(got)} frames for {perSay} x {members}")
    passes = max(1, deliveries // (perSay * members))
    gc.collect()
    before = server.written()
    start = time.process_time()
    for _ in range(passes):
        once()
    spent = time.process_time() - start
    if not perPass or server.written() - before != passes * perPass:
        raise SystemExit(f"{label}: the bytes delivered are not the probe's")
    ns = spent / (passes * perSay * members) * 1e9
    print(f"{label:<48} {ns:6.0f} ns per delivery {1e9 / ns:11,.0f} deliveries/s")


def baseline(deliveries: int, users: int = 100, label: str = "(a)") -> None:
    """(a) 1.1: 100 users in the default room, one sends SAYs."""
    server = Server()
    sender = server.connect(users, rooms12=False)[0]
    says = b"".join(frame(SAY, TEXT) for _ in range(BATCH))
    name = f"{label} 1 room x {users} users, 1.1 SAY"
    measure(server, name, [(sender, says)], users, deliveries)


def references(deliveries: int) -> None:
    """Rooms of 10 cost more per delivery than 1.1's room of 100 because a
    message's own cost is shared by fewer members: (a10) is 1.1 at 10
    users, (b1) one room of 10 with ROOM_SAY (against (b): the room count)."""
    baseline(deliveries, 10, "(a10)")
    server, groups = inRooms(1, 10)
    reads: list[Read] = [(groups[0][0], roomSays(b"r0"))]
    measure(server, "(b1) 1 room x 10 users, ROOM_SAY", reads, 10, deliveries)


def roomSays(room: bytes, n: int = BATCH) -> bytes:
    return b"".join(frame(ROOM_SAY, room + b"." + TEXT) for _ in range(n))


def inRooms(rooms: int, members: int, **config: object) -> tuple[Server, list[list]]:
    """A server with ``rooms`` rooms ``r0``... of ``members`` users each."""
    server = Server(**config)
    users = server.connect(rooms * members, rooms12=True)
    groups = [users[r * members : (r + 1) * members] for r in range(rooms)]
    for r, group in enumerate(groups):
        for user in group:
            server.enter(user, b"r%d" % r)
    return server, groups


def manyRooms(deliveries: int) -> None:
    """(b) 100 rooms x 10 users, the first member of each sends."""
    server, groups = inRooms(100, 10)
    reads = [(g[0], roomSays(b"r%d" % r)) for r, g in enumerate(groups)]
    measure(server, "(b) 100 rooms x 10 users, ROOM_SAY", reads, 10, deliveries)


def mostlyIdle(deliveries: int) -> None:
    """(c) 1,000 rooms x 5 users; every 100th user sends (1%: 50 rooms)."""
    server, groups = inRooms(1000, 5)
    users = [u for g in groups for u in g]
    reads = [(users[k], roomSays(b"r%d" % (k // 5))) for k in range(0, len(users), 100)]
    measure(server, "(c) 1,000 rooms x 5 users, 1% sending", reads, 5, deliveries)


def oneInTwenty(deliveries: int) -> None:
    """(d) one user in 20 rooms of 10 members; its reads cycle the rooms."""
    server, groups = inRooms(20, 9, max_rooms_per_user=21)
    talker = server.connect(1, rooms12=True)[0]
    for r in range(20):
        server.enter(talker, b"r%d" % r)
    order = [b"r%d" % (n % 20) for n in range(80)]  # 80: 5 reads of 16
    reads = [
        (talker, b"".join(roomSays(room, 1) for room in order[i : i + BATCH]))
        for i in range(0, 80, BATCH)
    ]
    label = "(d) 1 user in 20 rooms x 10, each to the next"
    measure(server, label, reads, 10, deliveries)


def idleRoomBytes(rooms: int = 1000) -> None:
    """Bytes per idle room: ``rooms`` users each enter a room of their own."""
    server = Server()
    users = server.connect(rooms, rooms12=True)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r, user in enumerate(users):
        user.dataReceived(frame(ENTER, b"r%d" % r))
    server.clock.advance(0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    label = f"idle room of one member ({rooms:,} rooms)"
    print(f"{label:<48} {(after - before) / rooms:6.0f} bytes per room (tracemalloc)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--deliveries", type=int, default=1_000_000,
                   help="deliveries timed per scenario")  # fmt: skip
    args = p.parse_args()
    scenarios: list[Callable[[int], None]] = [baseline]
    if Server().speaks12():
        scenarios += [manyRooms, mostlyIdle, oneInTwenty, references]
    else:
        print("this chatd does not speak 1.2: (a) only")
    for scenario in scenarios:
        scenario(args.deliveries)
    if len(scenarios) > 1:
        idleRoomBytes()


if __name__ == "__main__":
    main()
