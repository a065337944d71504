"""End to end, a real twistd: a client reset mid-burst resumes with every
message exactly once, in order (docs/protocol.md, "History and resume")."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.daemon import Daemon, connect

BURST = 1000


class ResumeEndToEnd(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.daemon = Daemon(
            "--rate-limit", "0", "--history", "5000", "--history-bytes", "4000000",
            "--idle-timeout", "0",
        )  # fmt: skip
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()

    @defer.inlineCallbacks
    def client(self):  # type: ignore[no-untyped-def]
        client = yield connect(self.daemon.port)
        self.addCleanup(client.transport.abortConnection)
        return client

    @defer.inlineCallbacks
    def test_reset_mid_burst_then_resume(self):  # type: ignore[no-untyped-def]
        alice = yield self.client()
        for ftype, payload in (
            (T.VERSION, b"1.2"),
            (T.RESUMABLE, b""),
            (T.HELLO, b"alice"),
        ):
            alice.send(ftype, payload)
        token = yield alice.nextOf(T.TOKEN)
        alice.send(T.READY)
        yield alice.nextOf(T.JOIN)
        bob = yield self.client()
        bob.send(T.HELLO, b"bob")
        bob.send(T.READY)
        bobEntry = yield bob.nextOf(T.JOIN)
        yield alice.nextOf(T.JOIN)  # bob's
        texts = [b"m%04d" % i for i in range(BURST)]
        bob.sendRaw(b"".join(encode(T.SAY, t) for t in texts))
        # Alice reads part of the burst, each MESSAGE after its MARK, then
        # her connection is reset (RST) with the rest unread.
        got: list[bytes] = []
        last = 0
        while len(got) < 100:
            ftype, payload = yield alice.next()
            if ftype == T.MARK:
                mark = int(payload.rsplit(b".", 1)[1])
                ftype, payload = yield alice.next()
                self.assertEqual(ftype, T.MESSAGE)
                got.append(payload.rsplit(b".", 1)[1])
                last = mark
        alice.abort()
        yield alice.closed
        # Bob has the whole burst (so it is all sequenced); alice is kept.
        bob.send(T.PING, b"sync")
        seen = []
        while True:
            ftype, payload = yield bob.next()
            if ftype == T.PONG:
                break
            self.assertNotEqual(ftype, T.LEAVE, payload)
            if ftype == T.MESSAGE:
                seen.append(payload)
        self.assertEqual(len(seen), BURST)
        again = yield self.client()
        again.send(T.VERSION, b"1.2")
        again.send(T.RESUME, token)
        again.send(T.SINCE, b"lobby.%d" % last)
        again.send(T.READY)
        again.send(T.PING, b"live")
        welcome = yield again.nextOf(T.WELCOME)
        self.assertEqual(welcome.split(b".")[0], b"alice")
        marks = []
        while True:
            ftype, payload = yield again.next()
            if ftype == T.PONG:
                break
            self.assertNotIn(ftype, (T.ERROR, T.JOIN), payload)
            if ftype == T.MARK:
                marks.append(int(payload.rsplit(b".", 1)[1]))
            elif ftype == T.MESSAGE:
                got.append(payload.rsplit(b".", 1)[1])
        self.assertEqual(got, texts)  # every one, once, in order
        self.assertEqual(marks, sorted(set(marks)))
        self.assertTrue(all(m > last for m in marks))
        # Live again, and bob never saw alice leave or come back.
        bob.send(T.SAY, b"after")
        payload = yield again.nextOf(T.MESSAGE)
        self.assertEqual(payload, bobEntry + b".after")
        bob.send(T.PING, b"end")
        while True:
            ftype, payload = yield bob.next()
            if ftype == T.PONG:
                break
            self.assertNotIn(ftype, (T.LEAVE, T.JOIN), payload)
