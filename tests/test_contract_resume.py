"""History and resume in every deployment mode (tests/contract.py): the
numbers agree across processes everywhere; one process, --workers (the
resume lands on the other worker), --redis (on the other node) and the
WebSocket resume a dropped user with what it missed.
tests/test_resume.py checks the rules in depth in memory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.contractcase import ContractHelpers

#: The modes that serve resume (docs/protocol.md, "Status").
RESUMING = {"single", "workers", "redis", "websocket"}


class ResumeContractTests(ContractHelpers):
    @defer.inlineCallbacks
    def numbered(self, name: bytes, server: int | None = None):  # type: ignore[no-untyped-def]
        """An ACTIVE user that asked for numbers: (client, entry, token)."""
        client = yield self.deployment.connect(server)
        client.send(T.VERSION, b"1.2")
        client.send(T.RESUMABLE)
        client.send(T.HELLO, name)
        self.assertEqual((yield self.expect(client, T.VERSION)), b"1.2")
        window = yield self.expect(client, T.RESUMABLE)
        self.assertEqual(window, b"60" if self.mode in RESUMING else b"0")
        welcome = yield self.expect(client, T.WELCOME)
        token = (yield self.expect(client, T.TOKEN)) if window != b"0" else None
        client.send(T.READY)
        mark = yield self.expect(client, T.MARK)
        entry = yield self.expect(client, T.JOIN)
        self.assertTrue(mark.startswith(b"lobby."))
        self.assertEqual(entry.split(b".")[2], welcome.split(b".")[0])
        return client, entry, token

    @defer.inlineCallbacks
    def numberedMessages(self, client, count: int):  # type: ignore[no-untyped-def]
        """The next ``count`` (number, MESSAGE payload), JOINs skipped."""
        got = []
        while len(got) < count:
            mark = yield self.expect(client, T.MARK)
            ftype, payload = yield client.next()
            if ftype == T.MESSAGE:
                got.append((int(mark.rsplit(b".", 1)[1]), payload))
        return got

    @defer.inlineCallbacks
    def test_numbers_agree_across_processes(self):
        yield self.deploy("--rate-limit", "0")
        ann, aentry, _ = yield self.numbered(b"ann", 0)
        bob, bentry, _ = yield self.numbered(b"bob", 1 % self.deployment.servers)
        for i in range(5):
            ann.send(T.SAY, b"a%d" % i)
            bob.send(T.SAY, b"b%d" % i)
        seen = []
        for client in (ann, bob):
            seen.append((yield self.numberedMessages(client, 10)))
        self.assertEqual(seen[0], seen[1])  # same events, same numbers
        numbers = [n for n, _ in seen[0]]
        self.assertEqual(numbers, sorted(set(numbers)))

    @defer.inlineCallbacks
    def test_resume_where_served(self):
        yield self.deploy("--rate-limit", "0")
        ann, aentry, token = yield self.numbered(b"ann", 0)
        bob, bentry, _ = yield self.numbered(b"bob", 1 % self.deployment.servers)
        bob.send(T.VERSION, b"1.2")
        yield self.expect(bob, T.VERSION)
        bob.send(T.SAY, b"seen")
        [(last, _)] = yield self.numberedMessages(ann, 1)
        if self.mode not in RESUMING:
            self.assertIsNone(token)
            yield self.sync(bob)
            bob.send(T.HISTORY, b"lobby.10")
            self.assertEqual((yield self.expect(bob, T.HISTORY)), b"lobby.0")
            return
        ann.abort()
        yield ann.closed
        for text in (b"one", b"two"):
            bob.send(T.SAY, text)
        before = yield self.sync(bob)
        self.assertNotIn(T.LEAVE, [t for t, _ in before])
        if self.mode == "workers":
            # Workers alternate (--min-workers 2): ann was on the first,
            # bob on the second; this one takes the first, so the resume
            # lands on the second, where ann was not.
            yield self.deployment.connect(0)
        # --redis: ann was on node 0; the resume lands on node 1.
        again = yield self.deployment.connect(1 if self.mode == "redis" else 0)
        again.send(T.VERSION, b"1.2")
        again.send(T.RESUME, token)
        again.send(T.SINCE, b"lobby.%d" % last)
        again.send(T.READY)
        yield self.expect(again, T.VERSION)
        self.assertEqual((yield self.expect(again, T.WELCOME)).split(b".")[0], b"ann")
        self.assertNotEqual((yield self.expect(again, T.TOKEN)), token)
        replay = yield self.numberedMessages(again, 2)
        self.assertEqual([p for _, p in replay], [bentry + b".one", bentry + b".two"])
        self.assertTrue(all(n > last for n, _ in replay))
        bob.send(T.HISTORY, b"lobby.2")
        self.assertEqual((yield self.expect(bob, T.HISTORY)), b"lobby.2")
        history = yield self.numberedMessages(bob, 2)
        self.assertEqual(history, replay)
        after = yield self.sync(bob)
        self.assertNotIn(T.JOIN, [t for t, _ in after])


class SingleProcessResume(ResumeContractTests, unittest.TestCase):
    mode = "single"


class WorkersResume(ResumeContractTests, unittest.TestCase):
    mode = "workers"


class RedisResume(ResumeContractTests, unittest.TestCase):
    mode = "redis"


class WebSocketResume(ResumeContractTests, unittest.TestCase):
    mode = "websocket"
