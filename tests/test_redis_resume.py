"""History and resume with ``--redis``, in memory: two or three nodes
(whole ChatFactories with their RedisBackend) on one fake Redis and one
task.Clock.  A resume lands on another node, the window ends once, a node
killed -9 leaves its resumable users to its reaper, and a node started
later reads its history back from the stream (docs/cluster.md, "Resume
and history").  tests/test_contract_resume.py runs real nodes."""

from __future__ import annotations

from twisted.trial import unittest

from chatd.cluster.node import ClusterNode
from chatd.cluster.redisnode import RedisBackend
from chatd.cluster.redisresumes import RedisResumes
from chatd.core.history import split
from chatd.core.tokens import digest
from chatd.server.config import Config
from chatd.server.factory import ChatFactory
from chatd.wire import ErrorCode, LeaveReason
from chatd.wire import FrameType as T
from tests.fakeredis import FakeRedis
from tests.memory import Peer, TurnClock
from tests.test_cluster_units import TARGET, TTL
from tests.test_resume_status import KEYS

WINDOW = 60.0


class Node:
    """One chatd node in memory (what :class:`tests.memory.Peer` needs of
    a server: ``clock``, ``factory``, ``connect``)."""

    def __init__(
        self, name: str, redis: FakeRedis, clock: TurnClock, **config: object
    ) -> None:
        self.name = name
        self.clock = clock
        options: dict[str, object] = {"resume_window": WINDOW, "rate_limit": 0.0}
        options.update(config)
        self.config = Config(idle_timeout=0.0, **options)  # type: ignore[arg-type]
        self.node = ClusterNode(TARGET, name, TTL, clock, connect=redis.connect)
        self.backend = RedisBackend(self.node)
        self.factory = ChatFactory(self.config, clock, backend=self.backend)
        self.backend.start()
        clock.advance(0)
        assert self.node.registered
        self._ports = iter(range(40000 + 1000 * len(name), 65536))

    @property
    def resumes(self) -> RedisResumes:
        resumes = self.factory.hub.resumes
        assert isinstance(resumes, RedisResumes)
        return resumes

    def connect(self) -> Peer:
        return Peer(self, next(self._ports))  # type: ignore[arg-type]

    def kill(self) -> None:
        """As kill -9: no more heartbeats, nothing said to anyone."""
        self.node.membership.halt()
        self.node.standing.cancelCalls()
        for conn in self.node.link.cmd, self.node.link.reader:
            conn.disconnect()  # type: ignore[union-attr]


class RedisResumeCase(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = TurnClock()
        self.clock.advance(1_000_000)  # wall-clock-like deadlines
        self.redis = FakeRedis(self.clock)
        self.a = Node("a", self.redis, self.clock)
        self.b = Node("b", self.redis, self.clock)

    def wait(self, seconds: float) -> None:
        """Time passes, the heartbeats with it (one step each second)."""
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def speaker(self, node: Node, name: bytes) -> tuple[Peer, bytes]:
        """An ACTIVE numbered user on ``node`` and its token."""
        peer = node.connect()
        for ftype, payload in (
            (T.VERSION, b"1.2"),
            (T.RESUMABLE, b""),
            (T.HELLO, name),
        ):
            peer.send(ftype, payload)
        frames = peer.received()
        self.assertEqual(
            [t for t, _ in frames], [T.VERSION, T.RESUMABLE, T.WELCOME, T.TOKEN]
        )
        self.assertEqual(frames[1][1], b"60")
        peer.send(T.READY)
        got = peer.received()
        self.assertEqual([t for t, _ in got[:2]], [T.MARK, T.JOIN], got)
        peer.entry = got[1][1]
        return peer, frames[3][1]

    def said(self, peer: Peer) -> list[tuple[int, bytes]]:
        """(number, text) of the MESSAGEs ``peer`` got, in order."""
        frames = peer.received()
        out = []
        for (t, mark), (u, payload) in zip(frames, frames[1:], strict=False):
            if t == T.MARK and u == T.MESSAGE:
                out.append((int(mark.rsplit(b".", 1)[1]), payload.rsplit(b".", 1)[1]))
        return out

    def resume(
        self, node: Node, token: bytes, since: int
    ) -> tuple[Peer, list[tuple[int, bytes]]]:
        peer = node.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, token)
        peer.send(T.SINCE, b"lobby.%d" % since)
        peer.send(T.READY)
        frames = peer.received()
        types = [t for t, _ in frames]
        self.assertEqual(types[:3], [T.VERSION, T.WELCOME, T.TOKEN], frames)
        if since:
            self.assertNotIn(T.JOIN, types)  # the user never left
        peer._seen = 0  # read the frames again as MESSAGEs
        return peer, self.said(peer)

    def uid(self, peer: Peer) -> bytes:
        return peer.entry.split(b".")[0]

    def dropped(self) -> tuple[Peer, bytes, Peer, int]:
        """ann (on a) got bob's (on b) "one", then lost her connection:
        (ann, her token, bob, the number of "one")."""
        ann, token = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        bob.send(T.SAY, b"one")
        [(last, _)] = self.said(ann)
        ann.lose()
        return ann, token, bob, last

    def assertSpent(self, node: Node, token: bytes) -> None:
        """``token`` resumes nothing on ``node``."""
        peer = node.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, token)
        self.assertEqual(peer.received()[-1][1].split(b".")[0], b"BAD_TOKEN")


class ResumeAcrossNodesTests(RedisResumeCase):
    def test_a_resume_lands_on_the_other_node_with_what_was_missed(self) -> None:
        ann, token, bob, last = self.dropped()
        self.assertEqual(len(self.a.factory.hub.detached), 1)
        for text in (b"two", b"three"):
            bob.send(T.SAY, text)
        self.assertNotIn(T.LEAVE, bob.types())
        again, replay = self.resume(self.b, token, last)
        self.assertEqual([t for _, t in replay], [b"two", b"three"])
        self.assertTrue(all(n > last for n, _ in replay))
        # The old node dropped its session silently; the user is b's now.
        self.assertEqual(len(self.a.factory.hub.detached), 0)
        uid = int(self.uid(ann))
        self.assertNotIn(uid, self.a.node.seq.local)
        self.assertIn(uid, self.b.node.seq.local)
        self.assertIn(b"%d" % uid, self.redis.hashes[b"chatd:nodeusers:b"])
        self.assertEqual(self.redis.get(b"chatd:name:ann"), b"b")
        self.assertEqual([t for t in bob.types() if t in (T.JOIN, T.LEAVE)], [])
        bob.send(T.SAY, b"four")
        self.assertEqual([t for _, t in self.said(again)], [b"four"])
        # Its LEAVE, later, comes from b and troubles nobody.
        again.send(T.BYE)
        self.clock.advance(0)
        self.assertIn(T.LEAVE, bob.types())
        self.assertTrue(self.a.node.registered)

    def test_only_digests_are_kept_and_a_token_resumes_once(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        kept = repr((self.redis.strings, self.redis.hashes, self.redis.streams))
        self.assertNotIn(token.decode(), kept)
        ann.lose()
        self.resume(self.b, token, 0)
        self.assertSpent(self.b, token)
        self.assertSpent(self.a, token)

    def test_a_resume_on_the_same_node(self) -> None:
        _, token, bob, last = self.dropped()
        bob.send(T.SAY, b"two")
        _, replay = self.resume(self.a, token, last)
        self.assertEqual([t for _, t in replay], [b"two"])
        self.assertEqual(len(self.a.factory.hub.detached), 0)
        self.assertEqual(len(self.a.resumes), 1)  # the new token

    def test_the_window_ends_with_one_leave(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        ann.lose()
        self.wait(WINDOW)
        leaves = [p for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [ann.entry + b".error"])
        self.assertEqual(list(self.redis.hashes[b"chatd:resumable"]), [b"2"])  # bob's
        self.assertSpent(self.b, token)


class DeadNodeTests(RedisResumeCase):
    def killA(self) -> None:
        self.a.kill()
        self.wait(TTL + TTL / 5)  # a's lease lapses, b's heartbeat reaps a

    def test_a_dead_nodes_resumable_user_resumes_on_its_reaper(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        plain = self.a.connect()
        plain.send(T.HELLO, b"carl")
        plain.send(T.READY)
        bob, _ = self.speaker(self.b, b"bob")
        bob.send(T.SAY, b"one")
        [(last, _)] = self.said(ann)
        bob.received()
        self.killA()
        # carl (not resumable) leaves; ann is kept for a resume.
        leaves = [p.split(b".")[2] for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [b"carl"])
        self.assertEqual(self.redis.get(b"chatd:name:ann"), b"b")
        bob.send(T.SAY, b"two")
        again, replay = self.resume(self.b, token, last)
        self.assertEqual([t for _, t in replay], [b"two"])
        self.wait(WINDOW)
        self.assertNotIn(T.LEAVE, bob.types())  # resumed: no window runs

    def test_a_dead_nodes_user_not_resumed_leaves_when_the_window_ends(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.killA()
        self.assertNotIn(T.LEAVE, bob.types())
        self.assertEqual(len(self.b.resumes), 2)  # bob's token, ann kept
        self.wait(WINDOW)
        leaves = [p for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [ann.entry + b".error"])
        self.assertIsNone(self.redis.get(b"chatd:name:ann"))
        self.assertEqual(len(self.b.resumes), 1)

    def test_a_token_given_before_ready_is_spent_by_the_reap(self) -> None:
        """ann got her TOKEN on a, which died before her READY: the reap
        spends it (nothing in Redis resumes, or names, a user who never
        was active)."""
        ann = self.a.connect()
        for ftype, payload in (
            (T.VERSION, b"1.2"),
            (T.RESUMABLE, b""),
            (T.HELLO, b"ann"),
        ):
            ann.send(ftype, payload)
        token = [p for t, p in ann.received() if t == T.TOKEN][0]
        self.assertEqual(len(self.redis.hashes[b"chatd:resumable"]), 1)
        bob, bobToken = self.speaker(self.b, b"bob")
        self.killA()
        held = self.redis.hashes.get(b"chatd:resumable", {})
        self.assertEqual([v.split(b" ")[1] for v in held.values()], [b"b"])  # bob's
        self.assertEqual([k for k in self.redis.strings if b"token:" in k], [
            b"chatd:token:" + digest(bobToken).hex().encode()])  # fmt: skip
        self.assertSpent(self.b, token)
        self.assertNotIn(T.LEAVE, bob.types())  # she never joined

    def test_a_sigterm_of_the_adopter_is_leave_shutdown(self) -> None:
        """b adopted ann from dead a; b stops (SIGTERM): ann leaves as b's
        own users do, ``shutdown`` (docs/protocol.md: her server stopped),
        once, and her token resumes nothing."""
        ann, token = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.killA()
        self.assertEqual(len(self.b.resumes._ghosts), 1)
        c = Node("c", self.redis, self.clock)
        carol, _ = self.speaker(c, b"carol")
        self.b.factory.closeAll(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
        stopped = self.b.backend.stop()
        self.wait(2)
        self.assertTrue(stopped.called)
        leaves = sorted(p for t, p in carol.received() if t == T.LEAVE)
        self.assertEqual(
            leaves, sorted([ann.entry + b".shutdown", bob.entry + b".shutdown"])
        )
        self.assertSpent(c, token)
        self.wait(WINDOW + TTL)
        self.assertNotIn(T.LEAVE, carol.types())  # once

    def test_a_kick_ends_an_adopted_user(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.killA()
        resume = self.b.backend.status().resume
        assert resume is not None
        self.assertEqual(set(resume), KEYS)  # the one process's shape
        self.assertEqual((resume["detached"], resume["tokens"]), (1, 2))
        self.assertTrue(self.b.factory.hub.kick("ann"))
        self.clock.advance(0)
        leaves = [p for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [ann.entry + b".kicked"])
        self.assertSpent(self.b, token)

    def test_a_reaped_nodes_detached_session_goes_silently(self) -> None:
        """a stops renewing (frozen): b reaps it and adopts detached ann;
        at the window's end b's LEAVE is the only one, a's session goes."""
        ann, _, bob, _ = self.dropped()
        self.a.node.membership.halt()
        self.wait(TTL + TTL / 5)
        self.assertEqual(len(self.b.resumes._ghosts), 1)
        self.wait(WINDOW + TTL)
        leaves = [p for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [ann.entry + b".error"])
        self.assertEqual(len(self.a.factory.hub.detached), 0)
        self.assertNotIn(int(self.uid(ann)), self.a.node.seq.local)


class SeededHistoryTests(RedisResumeCase):
    def test_a_node_started_later_has_the_history(self) -> None:
        bob, _ = self.speaker(self.b, b"bob")
        for text in (b"one", b"two"):
            bob.send(T.SAY, text)
        bob.received()
        c = Node("c", self.redis, self.clock)
        carl, _ = self.speaker(c, b"carl")
        carl.send(T.HISTORY, b"lobby.10")
        frames = carl.received()
        self.assertEqual(frames[0], (T.HISTORY, b"lobby.4"))  # 2 JOINs, 2 said
        self.assertEqual(
            [p.rsplit(b".", 1)[1] for t, p in frames if t == T.MESSAGE],
            [b"one", b"two"],
        )
        self.assertEqual(c.resumes.stream.knownFrom, 1)

    def test_a_since_before_what_the_node_read_back_is_history_gone(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        ann.send(T.SAY, b"zero")
        [(last, _)] = self.said(ann)
        ann.lose()
        for text in (b"one", b"two", b"three"):
            self.speaker(self.b, text)[0].send(T.SAY, text)
        c = Node("c", self.redis, self.clock, history=2)
        self.assertGreater(c.resumes.stream.knownFrom, 1)
        again = c.connect()
        again.send(T.VERSION, b"1.2")
        again.send(T.RESUME, token)
        again.send(T.SINCE, b"lobby.%d" % last)
        again.send(T.READY)
        errors = [p for t, p in again.received() if t == T.ERROR]
        self.assertEqual([e.split(b".")[0] for e in errors], [b"HISTORY_GONE"])

    def test_a_gap_in_the_sequence_is_history_gone(self) -> None:
        _, token, bob, last = self.dropped()
        seq = self.redis.incrby(b"chatd:seq", 5)  # five events no node reads:
        self.redis.hash(b"chatd:streamlast")[b"stream"] = b"%d" % seq  # trimmed
        bob.send(T.SAY, b"after")
        self.clock.advance(0)
        self.assertEqual(self.b.resumes.stream.knownFrom, split(last)[0] + 6)
        again = self.b.connect()
        for ftype, payload in (
            (T.VERSION, b"1.2"),
            (T.RESUME, token),
            (T.SINCE, b"lobby.%d" % last),
            (T.READY, b""),
        ):
            again.send(ftype, payload)
        frames = again.received()
        errors = [p.split(b".")[0] for t, p in frames if t == T.ERROR]
        self.assertEqual(errors, [b"HISTORY_GONE"])
        self.assertEqual(frames[-1][1].rsplit(b".", 1)[1], b"after")
