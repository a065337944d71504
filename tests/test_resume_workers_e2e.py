"""End to end, a real ``twistd -n chatd --workers 2``: a user dropped on one
worker resumes on the other (docs/workers.md, "Resume").

``--min-workers 2`` starts both workers at once and main hands each new
connection to the least recently chosen one, so connections alternate
between them: the k-th connection of a test goes to worker 1 + (k-1) % 2,
and the log line main writes on the hand-over says which two took part.
"""

from __future__ import annotations

import json
import re

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import LOOPBACK, Daemon, FrameClient, connect
from tests.test_workers_e2e import post, request

WORKERS = ("--workers", "2", "--min-workers", "2", "--rate-limit", "0")
HANDED = re.compile(r"resume handed over id=\d+ worker=(\d+) to worker=(\d+)")


@defer.inlineCallbacks
def numbered(client: FrameClient, count: int):  # type: ignore[no-untyped-def]
    """The next ``count`` numbered events as (room, type, payload)."""
    got = []
    while len(got) < count:
        ftype, payload = yield client.next()
        if ftype == T.MARK:
            room = payload.rsplit(b".", 1)[0]
            ftype, payload = yield client.next()
            got.append((room, ftype, payload))
    return got


@defer.inlineCallbacks
def resumeBlock(port: int, until, within: float = 10.0):  # type: ignore[no-untyped-def]
    """/status's ``resume`` block once ``until(block)`` holds: a worker's
    KEPT reaches main on its own link after the drop, with no reply the
    test could wait on, so this asks again (bounded) until main has it."""
    waited = 0.0
    while True:
        response = yield request(port, "GET", "/status")
        block = json.loads(response.split(b"\r\n\r\n", 1)[1])["resume"]
        if until(block) or waited >= within:
            return block
        yield task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


class ResumeOnAnotherWorker(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start(self, *options: str):  # type: ignore[no-untyped-def]
        self.daemon = Daemon(*WORKERS, "--admin", LOOPBACK, *options)
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()

    @defer.inlineCallbacks
    def client(self, *frames: tuple[int, bytes]):  # type: ignore[no-untyped-def]
        client = yield connect(self.daemon.port)
        self.addCleanup(client.transport.abortConnection)
        for ftype, payload in frames:
            client.send(ftype, payload)
        return client

    @defer.inlineCallbacks
    def resumable(self, name: bytes, *rooms: bytes):  # type: ignore[no-untyped-def]
        """An ACTIVE resumable user in ``rooms``: (client, token, the
        number of its own JOIN)."""
        client = yield self.client(
            (T.VERSION, b"1.2"), (T.RESUMABLE, b""), (T.HELLO, name), (T.READY, b"")
        )
        token = yield client.nextOf(T.TOKEN)
        joined = yield client.nextOf(T.MARK)
        yield client.nextOf(T.JOIN)
        for room in rooms:
            client.send(T.ENTER, room)
            yield client.nextOf(T.ROOM_JOIN)
        return client, token, joined

    @defer.inlineCallbacks
    def sync(self, client: FrameClient):  # type: ignore[no-untyped-def]
        """Every frame before a PONG: what was sent to ``client`` so far."""
        client.send(T.PING, b"sync")
        frames = []
        while True:
            ftype, payload = yield client.next()
            if (ftype, payload) == (T.PONG, b"sync"):
                return frames
            frames.append((ftype, payload))

    @defer.inlineCallbacks
    def test_resume_on_the_other_worker(self):  # type: ignore[no-untyped-def]
        yield self.start()
        ann, token, _ = yield self.resumable(b"ann", b"den")  # worker 1
        bob = yield self.client((T.VERSION, b"1.2"), (T.HELLO, b"bob"), (T.READY, b""))
        bobEntry = yield bob.nextOf(T.JOIN)  # worker 2
        carol, _, _ = yield self.resumable(b"carol", b"den")  # worker 1
        # What ann saw last of each room: carol's JOIN and ROOM_JOIN.
        marks = {}
        while b"den" not in marks:
            mark = yield ann.nextOf(T.MARK)
            ftype, _ = yield ann.next()
            if ftype == T.ROOM_JOIN:
                marks[b"den"] = mark
            elif ftype == T.JOIN:
                marks[b"lobby"] = mark
        ann.abort()
        yield ann.closed
        # Only worker 1 serves den's members now: its messages reach main's
        # history, never worker 2, until ann is resumed there.
        carol.send(T.ROOM_SAY, b"den.r1")
        carol.send(T.ROOM_SAY, b"den.r2")
        bob.send(T.SAY, b"l1")
        yield self.sync(carol)
        before = yield self.sync(bob)
        self.assertNotIn(T.LEAVE, [t for t, _ in before])
        # main's /status counts ann detached, held for her resume.
        port = self.daemon.adminPort
        block = yield resumeBlock(port, lambda b: b["detached"] == 1)
        self.assertEqual((block["detached"], block["window"]), (1, 60.0))
        self.assertGreaterEqual(block["tokens"], 2)  # ann's and carol's
        self.assertEqual(block["history_rooms"], 2)  # lobby and den
        self.assertGreaterEqual(block["history_events"], 6)
        self.assertGreater(block["history_bytes"], 0)
        again = yield self.client(  # worker 2
            (T.VERSION, b"1.2"),
            (T.RESUME, token),
            (T.SINCE, marks[b"lobby"]),
            (T.SINCE, marks[b"den"]),
            (T.READY, b""),
        )
        self.assertEqual((yield again.nextOf(T.WELCOME)).split(b".")[0], b"ann")
        self.assertNotEqual((yield again.nextOf(T.TOKEN)), token)
        # main spent ann's token before it answered the RESUME: not detached.
        block = yield resumeBlock(port, lambda b: True)
        self.assertEqual(block["detached"], 0)
        replay = yield numbered(again, 3)
        self.assertEqual(
            [(room, t, p.rsplit(b".", 1)[1]) for room, t, p in replay],
            [
                (b"lobby", T.MESSAGE, b"l1"),
                (b"den", T.ROOM_MESSAGE, b"r1"),
                (b"den", T.ROOM_MESSAGE, b"r2"),
            ],
        )
        handed = HANDED.search(self.daemon.log)
        self.assertIsNotNone(handed, self.daemon.log)
        self.assertNotEqual(handed.group(1), handed.group(2))  # type: ignore[union-attr]
        # Live from there, on the new worker: den's messages follow ann.
        carol.send(T.ROOM_SAY, b"den.r3")
        bob.send(T.SAY, b"l2")
        live = yield numbered(again, 2)
        self.assertEqual(
            sorted(p.rsplit(b".", 1)[1] for _, _, p in live), [b"l2", b"r3"]
        )
        self.assertEqual([(t, p) for t, p in (yield self.sync(again))], [])
        # HISTORY is main's whole history, on any worker.
        bob.send(T.HISTORY, b"den.3")
        self.assertEqual((yield bob.nextOf(T.HISTORY)), b"den.3")
        history = yield numbered(bob, 3)
        self.assertEqual(
            [p.rsplit(b".", 1)[1] for _, _, p in history], [b"r1", b"r2", b"r3"]
        )
        # The token was spent: it resumes nothing, on any worker.
        for _ in range(2):
            spent = yield self.client((T.VERSION, b"1.2"), (T.RESUME, token))
            self.assertTrue((yield spent.nextOf(T.ERROR)).startswith(b"BAD_TOKEN."))
        after = yield self.sync(bob)
        self.assertNotIn(T.JOIN, [t for t, _ in after])
        self.assertNotIn(T.LEAVE, [t for t, _ in after])
        self.assertTrue(bobEntry)

    @defer.inlineCallbacks
    def test_window_end_kick_and_history_gone(self):  # type: ignore[no-untyped-def]
        yield self.start("--resume-window", "3", "--history", "2")
        ann, token, _ = yield self.resumable(b"ann")  # worker 1
        bob = yield self.client((T.HELLO, b"bob"), (T.READY, b""))  # worker 2
        yield bob.nextOf(T.JOIN)
        carol, carolToken, _ = yield self.resumable(b"carol")  # worker 1
        dave, daveToken, since = yield self.resumable(b"dave")  # worker 2
        for client in (ann, carol):
            client.abort()
            yield client.closed
        # A detached user's kick ends it at once; the window ends the other.
        response = yield post(self.daemon.adminPort, "/kick", "name=carol")
        self.assertIn(b"200", response.split(b"\r\n", 1)[0])
        leaves = []
        for _ in range(2):
            leaves.append((yield bob.nextOf(T.LEAVE)))
        self.assertEqual(
            [leave.split(b".", 2)[2] for leave in leaves],
            [b"carol.kicked", b"ann.error"],
        )
        for spent in (token, carolToken):
            again = yield self.client((T.VERSION, b"1.2"), (T.RESUME, spent))
            self.assertTrue((yield again.nextOf(T.ERROR)).startswith(b"BAD_TOKEN."))
        # dave's history no longer reaches back: HISTORY_GONE, then what is held.
        for text in (b"a", b"b", b"c"):  # three events, not one run of SAYs
            bob.send(T.SAY, text)
            yield self.sync(bob)
        dave.abort()
        yield dave.closed
        back = yield self.client(
            (T.VERSION, b"1.2"),
            (T.RESUME, daveToken),
            (T.SINCE, since),
            (T.READY, b""),
        )
        gone = yield back.nextOf(T.ERROR)
        self.assertTrue(gone.startswith(b"HISTORY_GONE.lobby."), gone)
        held = yield numbered(back, 2)
        self.assertEqual([p.rsplit(b".", 1)[1] for _, _, p in held], [b"b", b"c"])
