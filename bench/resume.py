"""In-process figures for 1.2's history and resume (docs/protocol.md).

In the style of bench/rooms.py (a ChatFactory on a task.Clock, transports
that count what they are given, so the figures are the Python work):

  (a) fan-out, 100 users in the default room, one sends 16 SAYs per read:
      a0 history off (--history 0), plain 1.2 recipients
      a1 history on (100), plain recipients        (the cost of keeping it)
      a2 history on, numbered recipients (RESUMABLE: a MARK per frame)
      a3 history on and --history-db (a file in a temporary directory),
         plain recipients; the store's flush runs after every read (its
         worst case: one transaction per 16 events), its cost counted in,
         and the events written per second of flushing alone
      a4 the same, flushed after every 16th read (256 events a transaction,
         what the 0.1 s interval gathers at 2,560 events/s and more)
  (b) memory: history of 100 rooms after 100,000 and after 1,000,000
      ROOM_SAYs (flat: bounded per room), and bytes per room held
  (c) 1,000 users dropped at once, then all resume (RESUME, SINCE, READY)
      after 10 messages each missed: CPU seconds until every one has its
      replay, and the frames replayed

    python bench/resume.py [--deliveries 1000000] [--fanout-only]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc

from hotpath import frame
from rooms import (
    BATCH,
    ENTER,
    HELLO,
    READY,
    ROOM_SAY,
    SAY,
    TEXT,
    VERSION,
    Recorder,
    Server,
    frames,
    heard,
)
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

RESUMABLE, TOKEN, RESUME, SINCE, MARK = 30, 31, 32, 33, 34
MESSAGE = 6


def numberedUsers(server: Server, n: int) -> list:
    """``n`` ACTIVE users that asked for numbers; each one's token kept."""
    made = []
    for _ in range(n):
        i = len(server.users)
        proto = server.factory.buildProtocol(None)
        proto.makeConnection(Recorder(10000 + i % 50000))
        proto.transport.data = bytearray()
        proto.dataReceived(
            frame(VERSION, b"1.2") + frame(RESUMABLE) + frame(HELLO, b"u%d" % i)
        )
        proto.dataReceived(frame(READY))
        server.clock.advance(0)
        got = heard(proto)
        proto.token = next(p for t, p in got if t == TOKEN)
        proto.last = [int(p.rsplit(b".", 1)[1]) for t, p in got if t == MARK][-1]
        server.users.append(proto)
        made.append(proto)
    server.clock.advance(0)
    return made


def fanout(
    label: str, deliveries: int, numbered: bool, flushEvery: int = 1, **config: object
) -> None:
    server = Server(**config)
    if numbered:
        numberedUsers(server, 100)
    else:
        server.connect(100, rooms12=True)
    sender = server.users[0]
    says = b"".join(frame(SAY, TEXT) for _ in range(BATCH))
    clock = server.clock
    store = server.factory.historyStore
    flush = store.flush if store is not None else (lambda: None)
    sender.dataReceived(says)  # the probe
    clock.advance(0)
    flush()
    passes = max(1, deliveries // (BATCH * 100))
    gc.collect()
    before = server.written()
    flushing = 0.0
    start = time.process_time()
    for i in range(1, passes + 1):
        sender.dataReceived(says)
        clock.advance(0)
        if i % flushEvery == 0 or i == passes:
            began = time.process_time()
            flush()
            flushing += time.process_time() - began
    spent = time.process_time() - start
    per = (server.written() - before) / (passes * BATCH * 100)
    ns = spent / (passes * BATCH * 100) * 1e9
    line = f"{label:<52} {ns:6.0f} ns per delivery  {per:5.1f} bytes each"
    if store is not None:
        line += f"  {passes * BATCH / flushing:9,.0f} events/s written"
        store.close()
    print(line)


def memory() -> None:
    server = Server(max_rooms_per_user=200)
    (user,) = server.connect(1, rooms12=True)
    for r in range(100):
        user.dataReceived(frame(ENTER, b"r%d" % r))
    server.clock.advance(0)
    reads = [
        b"".join(frame(ROOM_SAY, b"r%d.%s" % (r, TEXT)) for r in range(k, k + 10))
        for k in range(0, 100, 10)
    ]
    history = server.factory.hub.rooms.history
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sent = 0
    for target in (100_000, 1_000_000):
        while sent < target:
            for data in reads:
                user.dataReceived(data)
                server.clock.advance(0)
                sent += 10
        gc.collect()
        now = tracemalloc.get_traced_memory()[0] - base
        print(
            f"(b) after {sent:>9,} ROOM_SAYs in 100 rooms: {now / 1e6:6.2f} MB traced, "
            f"history {len(history):,} events, {history.heldBytes / 100:,.0f} bytes/room"
        )
    tracemalloc.stop()


def resumeMany(n: int = 1000, missed: int = 10) -> None:
    server = Server()
    users = numberedUsers(server, n)
    talker = server.connect(1, rooms12=False)[0]
    for proto in users:
        proto.transport.data = None
        proto.connectionLost(Failure(ConnectionLost()))
    server.clock.advance(0)
    for i in range(missed):
        talker.dataReceived(frame(SAY, b"missed %d" % i))
        server.clock.advance(0)
    detached = len(server.factory.hub.detached)
    start = time.process_time()
    again = []
    for proto in users:
        fresh = server.factory.buildProtocol(None)
        fresh.makeConnection(Recorder(20000))
        fresh.transport.data = bytearray()
        fresh.dataReceived(
            frame(VERSION, b"1.2")
            + frame(RESUME, proto.token)
            + frame(SINCE, b"lobby.%d" % proto.last)
            + frame(READY)
        )
        again.append(fresh)
    server.clock.advance(0)
    spent = time.process_time() - start
    replayed = [
        sum(1 for t, _ in frames(bytes(p.transport.data)) if t == MESSAGE)
        for p in again
    ]
    ok = sum(1 for r in replayed if r >= missed)
    print(
        f"(c) {detached} detached users resumed in {spent:.3f} CPU s "
        f"({spent / n * 1e6:.0f} us each); {ok}/{n} got all {missed} missed messages"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--fanout-only", action="store_true", help="(a) only")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="chatd-bench-")
    try:
        for i in range(2):  # twice, interleaved: the machine is noisy
            fanout(
                "(a0) 100 users, history off, plain", args.deliveries, False, history=0
            )
            fanout("(a1) 100 users, history on, plain", args.deliveries, False)
            fanout(
                "(a2) 100 users, history on, numbered (MARKs)", args.deliveries, True
            )
            for every, row in ((1, "a3"), (16, "a4")):
                db = os.path.join(folder, f"history{i}{row}.db")
                label = f"({row}) 100 users, history-db, flush per {every} reads"
                fanout(label, args.deliveries, False, every, history_db=db)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not args.fanout_only:
        memory()
        resumeMany()


if __name__ == "__main__":
    main()
