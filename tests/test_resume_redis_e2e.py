"""End to end, two real ``--redis`` nodes on a real redis-server: a
resumable user's node is killed with SIGKILL and the user resumes on the
other node with every message exactly once, in order (docs/cluster.md,
"Resume and history"); a node killed and started again under its name
takes its user back; and a node started later answers HISTORY from the
stream.  Each test starts its own redis-server (tests/redisserver.py) and
kills only the chatd it started."""

from __future__ import annotations

import shutil
import signal

from twisted.internet import defer
from twisted.internet.utils import getProcessOutput

from chatd.wire import FrameType as T
from tests.daemon import Daemon, FrameClient, connect
from tests.test_cluster_e2e import ClusterCase
from tests.test_resume_workers_e2e import numbered

#: Short, so that a node killed is reaped soon.
TTL = "2"


class ResumeAfterANodeDies(ClusterCase):
    def node(self, name: str, *options: str, ttl: str = TTL):  # type: ignore[no-untyped-def]
        return super().node(name, "--rate-limit", "0", *options, ttl=ttl)

    @defer.inlineCallbacks
    def client(self, daemon: Daemon, *frames: tuple[int, bytes]):  # type: ignore[no-untyped-def]
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        for ftype, payload in frames:
            client.send(ftype, payload)
        return client

    @defer.inlineCallbacks
    def resumable(self, daemon: Daemon, name: bytes, window: bytes = b"60"):  # type: ignore[no-untyped-def]
        """An ACTIVE resumable user: (client, token, its entry)."""
        client = yield self.client(
            daemon,
            (T.VERSION, b"1.2"),
            (T.RESUMABLE, b""),
            (T.HELLO, name),
            (T.READY, b""),
        )
        self.assertEqual((yield client.nextOf(T.RESUMABLE)), window)
        token = yield client.nextOf(T.TOKEN)
        [(_, _, entry)] = yield numbered(client, 1)
        return client, token, entry

    @defer.inlineCallbacks
    def said(self, client: FrameClient, count: int, kind: int = T.MESSAGE):  # type: ignore[no-untyped-def]
        """The next ``count`` MESSAGEs (or ``kind``) as (number, text);
        JOINs skipped."""
        got = []
        while len(got) < count:
            mark = yield client.nextOf(T.MARK)
            ftype, payload = yield client.next()
            if ftype == kind:
                got.append((int(mark.rsplit(b".", 1)[1]), payload.rsplit(b".", 1)[1]))
        return got

    @defer.inlineCallbacks
    def test_killed_node_user_resumes_on_the_other_once_in_order(self):  # type: ignore[no-untyped-def]
        a = yield self.node("node-a")
        b = yield self.node("node-b")
        ann, token, _ = yield self.resumable(a, b"ann")
        bob, _, _ = yield self.resumable(b, b"bob")
        for i in range(1, 6):
            bob.send(T.SAY, b"m%d" % i)
        # ann's client has processed m1..m3 when her node dies.
        seen = yield self.said(ann, 3)
        self.assertEqual((yield a.signal(signal.SIGKILL)), 137)
        for i in range(6, 9):
            bob.send(T.SAY, b"m%d" % i)
        # b reaps a (its lease lapsed): ann does not leave, she is kept.
        yield b.waitForLog("node node-a is gone: 0 users leave, 1 kept for a resume")
        again = yield self.client(
            b,
            (T.VERSION, b"1.2"),
            (T.RESUME, token),
            (T.SINCE, b"lobby.%d" % seen[-1][0]),
            (T.READY, b""),
        )
        welcome = yield again.nextOf(T.WELCOME)
        self.assertEqual(welcome.split(b".")[0], b"ann")
        self.assertNotEqual((yield again.nextOf(T.TOKEN)), token)
        replay = yield self.said(again, 5)
        bob.send(T.SAY, b"m9")
        live = yield self.said(again, 1)
        got = seen + replay + live
        self.assertEqual([t for _, t in got], [b"m%d" % i for i in range(1, 10)])
        numbers = [n for n, _ in got]
        self.assertEqual(numbers, sorted(set(numbers)))  # once each, in order
        # bob never saw ann leave or join again: all he got is the nine.
        bob.send(T.VERSION, b"1.2")  # a reply to wait on, after all of it
        types = []
        while (ftype := (yield bob.next())[0]) != T.VERSION:
            types.append(ftype)
        self.assertEqual(types, [T.MARK, T.MESSAGE] * 9)
        # b adopted ann when it reaped a, and handed her to her new session.
        self.assertIn("resume handed over id=1 from node node-b to node node-b", b.log)

    @defer.inlineCallbacks
    def test_a_room_resumes_on_a_node_that_did_not_read_it(self):  # type: ignore[no-untyped-def]
        """Issue 20: ann in room r on node a, killed; node b has no member
        in r (it does not read r's stream) until ann resumes there:
        then it reads r from the hand-over on, its history seeded from r's
        stream, and ann gets every message of r once, in order."""
        a = yield self.node("node-a")
        b = yield self.node("node-b")
        c = yield self.node("node-c")
        ann, token, _ = yield self.resumable(a, b"ann")
        yield self.resumable(b, b"bob")
        carl, _, _ = yield self.resumable(c, b"carl")
        for client in (carl, ann):
            client.send(T.ENTER, b"r")
            yield client.nextOf(T.ROOM_JOIN)
        carl.send(T.ROOM_SAY, b"r.m1")
        seen = yield self.said(ann, 1, T.ROOM_MESSAGE)
        self.assertEqual((yield a.signal(signal.SIGKILL)), 137)
        for i in (2, 3):
            carl.send(T.ROOM_SAY, b"r.m%d" % i)
        gone = "node node-a is gone: 0 users leave, 1 kept for a resume"
        yield defer.DeferredList(  # reaped by b or by c, then resumed on b
            [b.waitForLog(gone), c.waitForLog(gone)], fireOnOneCallback=True
        )
        again = yield self.client(
            b,
            (T.VERSION, b"1.2"),
            (T.RESUME, token),
            (T.SINCE, b"r.%d" % seen[0][0]),
            (T.READY, b""),
        )
        self.assertEqual((yield again.nextOf(T.WELCOME)).split(b".")[0], b"ann")
        replay = yield self.said(again, 2, T.ROOM_MESSAGE)
        carl.send(T.ROOM_SAY, b"r.m4")
        live = yield self.said(again, 1, T.ROOM_MESSAGE)
        got = seen + replay + live
        self.assertEqual([t for _, t in got], [b"m1", b"m2", b"m3", b"m4"])
        numbers = [n for n, _ in got]
        self.assertEqual(numbers, sorted(set(numbers)))

    @defer.inlineCallbacks
    def test_a_node_started_later_answers_history_from_the_stream(self):  # type: ignore[no-untyped-def]
        a = yield self.node("node-a")
        bob, _, _ = yield self.resumable(a, b"bob")
        for text in (b"one", b"two"):
            bob.send(T.SAY, text)
        yield self.said(bob, 2)
        c = yield self.node("node-c")
        carl, _, _ = yield self.resumable(c, b"carl")
        carl.send(T.HISTORY, b"lobby.3")
        self.assertEqual((yield carl.nextOf(T.HISTORY)), b"lobby.3")
        history = yield numbered(carl, 3)
        self.assertEqual(
            [p.rsplit(b".", 1)[1] for _, t, p in history if t == T.MESSAGE],
            [b"one", b"two"],
        )

    @defer.inlineCallbacks
    def test_resume_after_a_node_restart(self):  # type: ignore[no-untyped-def]
        """Issue 22: node a killed and started again under its name; ann,
        whose node it was, resumes on it with what she missed, and its
        history reaches back across the restart."""
        a = yield self.node("node-a")
        b = yield self.node("node-b")
        ann, token, _ = yield self.resumable(a, b"ann")
        bob, _, _ = yield self.resumable(b, b"bob")
        bob.send(T.SAY, b"before")
        seen = yield self.said(ann, 1)
        yield a.signal(signal.SIGKILL)
        bob.send(T.SAY, b"meanwhile")
        yield self.said(bob, 2)
        again = yield self.node("node-a")  # waits for the old lease to lapse
        client = yield self.client(
            again,
            (T.VERSION, b"1.2"),
            (T.RESUME, token),
            (T.SINCE, b"lobby.%d" % seen[0][0]),
            (T.READY, b""),
        )
        self.assertEqual((yield client.nextOf(T.WELCOME)).split(b".")[0], b"ann")
        replay = yield self.said(client, 1)
        self.assertEqual([t for _, t in replay], [b"meanwhile"])
        client.send(T.HISTORY, b"lobby.10")
        yield client.nextOf(T.HISTORY)
        history = yield self.said(client, 2)
        self.assertEqual(history, seen + replay)

    @defer.inlineCallbacks
    def test_windows_end_with_one_leave_on_a_live_and_a_dead_node(self):  # type: ignore[no-untyped-def]
        """--resume-window 1: ann's window ends on her own node, carl's
        on the node that reaped his; each LEAVE comes once."""
        a = yield self.node("node-a", "--resume-window", "1")
        b = yield self.node("node-b", "--resume-window", "1")
        ann, _, annEntry = yield self.resumable(a, b"ann", b"1")
        carl, _, carlEntry = yield self.resumable(a, b"carl", b"1")
        bob, _, _ = yield self.resumable(b, b"bob", b"1")
        ann.abort()
        self.assertEqual((yield bob.nextOf(T.LEAVE)), annEntry + b".error")
        yield a.signal(signal.SIGKILL)
        yield b.waitForLog("node node-a is gone: 0 users leave, 1 kept for a resume")
        self.assertEqual((yield bob.nextOf(T.LEAVE)), carlEntry + b".error")
        bob.send(T.SAY, b"after")  # nothing more came between
        self.assertEqual((yield self.said(bob, 1))[0][1], b"after")

    @defer.inlineCallbacks
    def test_a_token_given_before_ready_goes_with_the_reap(self):  # type: ignore[no-untyped-def]
        """ann got her TOKEN on a, which was killed before her READY: the
        real ``reap`` script spends it (nothing of it stays in Redis)."""
        if shutil.which("redis-cli") is None:
            self.skipTest("redis-cli is not installed")
        a = yield self.node("node-a")
        b = yield self.node("node-b")
        ann = yield self.client(
            a, (T.VERSION, b"1.2"), (T.RESUMABLE, b""), (T.HELLO, b"ann")
        )
        yield ann.nextOf(T.TOKEN)
        held = yield self.redisCli("HGETALL", "chatd:resumable")
        self.assertIn(b" node-a 0 ann", held)
        yield a.signal(signal.SIGKILL)
        yield b.waitForLog("node node-a is gone")
        self.assertEqual((yield self.redisCli("HGETALL", "chatd:resumable")), b"")
        self.assertEqual((yield self.redisCli("KEYS", "chatd:token:*")), b"")

    def redisCli(self, *args: str) -> defer.Deferred:
        socket = self.redis.url.removeprefix("unix://")
        return getProcessOutput(
            shutil.which("redis-cli"), ["-s", socket, *args], env=None
        ).addCallback(bytes.strip)
