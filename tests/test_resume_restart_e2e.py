"""End to end, a real twistd with ``--history-db`` killed (SIGKILL) mid
conversation and started again on the same file: its users resume with
their tokens, each gets what it missed exactly once, in order, and nobody
sees a LEAVE or a JOIN for them; a window that ends after the restart
sequences one LEAVE."""

from __future__ import annotations

import json
import os
import signal

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

from chatd.wire import FrameType as T
from tests.daemon import LOOPBACK, Daemon, FrameClient, connect

SAID = [b"m%d" % i for i in range(10)]


def number(payload: bytes) -> int:
    return int(payload.rsplit(b".", 1)[1])


class RestartEndToEnd(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.db = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def daemon(self, *options: str):  # type: ignore[no-untyped-def]
        daemon = Daemon(
            "--history-db", self.db, "--idle-timeout", "0", "--rate-limit", "0",
            "--admin", LOOPBACK, *options,
        )  # fmt: skip
        self.addCleanup(daemon.stop)
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def client(self, daemon: Daemon):  # type: ignore[no-untyped-def]
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        client.send(T.VERSION, b"1.2")
        return client

    @defer.inlineCallbacks
    def resumable(self, daemon: Daemon, name: bytes):  # type: ignore[no-untyped-def]
        """A numbered ACTIVE user: (client, token)."""
        client = yield self.client(daemon)
        client.send(T.RESUMABLE)
        client.send(T.HELLO, name)
        token = yield client.nextOf(T.TOKEN)
        client.send(T.READY)
        yield client.nextOf(T.JOIN)
        return client, token

    @defer.inlineCallbacks
    def written(self, daemon: Daemon):  # type: ignore[no-untyped-def]
        """Fires once --history-db has every event written (and the tokens
        with them): what a crash then leaves is known."""
        agent = Agent(reactor)
        url = f"http://127.0.0.1:{daemon.adminPort}/status".encode()
        for _ in range(200):
            response = yield agent.request(b"GET", url)
            status = json.loads((yield readBody(response)))
            held = status["resume"]["history_events"]
            if status["history_db"]["events_written"] == held > 0:
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("the history was not written")

    @defer.inlineCallbacks
    def until_pong(self, client: FrameClient):  # type: ignore[no-untyped-def]
        """Every frame up to the PONG of a PING sent now."""
        client.send(T.PING, b"sync")
        frames = []
        while True:
            frame = yield client.next()
            if frame[0] == T.PONG:
                return frames
            frames.append(frame)

    @defer.inlineCallbacks
    def resume(self, daemon: Daemon, token: bytes, since: int):  # type: ignore[no-untyped-def]
        client = yield self.client(daemon)
        client.send(T.RESUME, token)
        client.send(T.SINCE, b"lobby.%d" % since)
        client.send(T.READY)
        return client

    @defer.inlineCallbacks
    def test_sigkill_then_resume_with_the_token(self):  # type: ignore[no-untyped-def]
        first = yield self.daemon()
        alice, aliceToken = yield self.resumable(first, b"alice")
        bob, bobToken = yield self.resumable(first, b"bob")
        for text in SAID:
            bob.send(T.SAY, text)
        # alice reads up to m4; bob has everything (so all is sequenced).
        aliceLast = 0
        while True:
            ftype, payload = yield alice.next()
            if ftype == T.MARK:
                aliceLast = number(payload)
            elif ftype == T.MESSAGE and payload.endswith(b".m4"):
                break
        bobFrames = yield self.until_pong(bob)
        bobLast = max(number(p) for t, p in bobFrames if t == T.MARK)
        yield self.written(first)
        self.assertEqual((yield first.signal(signal.SIGKILL)), 128 + signal.SIGKILL)

        second = yield self.daemon()
        self.assertIn("2 resumable users (not stopped cleanly)", second.log)
        alice = yield self.resume(second, aliceToken, aliceLast)
        self.assertEqual((yield alice.nextOf(T.WELCOME)).split(b".")[0], b"alice")
        frames = yield self.until_pong(alice)
        kinds = {t for t, _ in frames}
        self.assertFalse(kinds & {T.ERROR, T.JOIN, T.LEAVE}, frames)
        said = [p.rsplit(b".", 1)[1] for t, p in frames if t == T.MESSAGE]
        self.assertEqual(said, SAID[5:])  # every one after SINCE, once, in order
        marks = [number(p) for t, p in frames if t == T.MARK]
        self.assertEqual(marks, sorted(set(marks)))
        self.assertTrue(all(m > aliceLast for m in marks))

        bob = yield self.resume(second, bobToken, bobLast)
        alice.send(T.SAY, b"back")
        self.assertTrue((yield bob.nextOf(T.MESSAGE)).endswith(b".alice.back"))
        alice.send(T.BYE)
        leave = yield bob.nextOf(T.LEAVE)  # the first LEAVE bob sees: the BYE's
        self.assertTrue(leave.endswith(b".alice.quit"), leave)
        frames = yield self.until_pong(bob)
        self.assertFalse({t for t, _ in frames} & {T.JOIN, T.LEAVE}, frames)

    @defer.inlineCallbacks
    def test_a_window_that_ends_after_the_restart(self):  # type: ignore[no-untyped-def]
        first = yield self.daemon()
        alice, token = yield self.resumable(first, b"alice")
        yield self.written(first)
        yield first.signal(signal.SIGKILL)

        second = yield self.daemon("--resume-window", "2")
        carol = yield self.client(second)
        carol.send(T.HELLO, b"carol")
        carol.send(T.READY)
        carol.send(T.WHO)
        users = yield carol.nextOf(T.USERS)
        self.assertIn(b".alice", users)  # held for its window
        leave = yield carol.nextOf(T.LEAVE)
        self.assertTrue(leave.endswith(b".alice.error"), leave)
        late = yield self.resume(second, token, 0)
        error = yield late.nextOf(T.ERROR)
        self.assertTrue(error.startswith(b"BAD_TOKEN."), error)
        frames = yield self.until_pong(carol)
        self.assertNotIn(T.LEAVE, [t for t, _ in frames])  # one LEAVE
