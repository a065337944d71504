"""The cluster node's parts on an in-memory Redis and a task.Clock: the
stream sequencer, the name leases and the membership, no server needed."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from chatd.cluster.membership import LOST, NAME_LOST
from chatd.cluster.node import ClusterNode
from chatd.cluster.options import parseRedisURL
from chatd.cluster.redislink import ClusterUnavailable
from chatd.core.events import Join, Leave, Message
from chatd.core.roster import User
from chatd.wire import ErrorCode, LeaveReason
from chatd.wire.eventframes import frameOf
from tests.fakeredis import FakeRedis
from tests.test_cluster_node import Collect, FakeFactory

TARGET = parseRedisURL("redis://127.0.0.1:1")
TTL = 10.0
U = User(1, 33, b"u")


class FakeClusterCase(unittest.SynchronousTestCase):
    """Nodes on one fake Redis, all on one clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)

    def node(
        self, name: str, factory: FakeFactory | None = None
    ) -> tuple[ClusterNode, Collect]:
        node = ClusterNode(TARGET, name, TTL, self.clock, connect=self.redis.connect)
        sink = Collect()
        if factory is not None:
            node.subscribe(factory.hub.replica)
        node.subscribe(sink)
        node.start(factory)
        self.clock.advance(0)
        self.assertTrue(node.registered)
        return node, sink

    def result(self, d: Deferred[Any]) -> Any:
        self.clock.advance(0)
        return self.successResultOf(d)

    def refused(self, d: Deferred[Any]) -> None:
        self.clock.advance(0)
        self.failureResultOf(d, ClusterUnavailable)

    def evalshas(self) -> int:
        return sum(1 for c in self.redis.commands if c[0] == b"EVALSHA")

    def beats(self, n: int) -> None:
        """``n`` heartbeats of every node (one each TTL/5)."""
        for _ in range(n):
            self.clock.advance(TTL / 5)
            self.clock.advance(0)

    def joined(self, node: ClusterNode, factory: FakeFactory, name: bytes) -> User:
        user = self.result(node.claim(name))
        factory.add(user)
        self.result(node.submit(Join(user)))
        return user

    def key(self, name: str) -> bytes | None:
        return self.redis.get(b"chatd:" + name.encode())


class SequencerTests(FakeClusterCase):
    def test_one_turn_is_one_evalsha_and_one_entry(self) -> None:
        a, sink = self.node("a")
        before = self.evalshas()
        ds = [a.submit(Message(U, b"m%d" % i)) for i in range(50)]
        seqs = [self.result(d) for d in ds]
        self.assertEqual(self.evalshas() - before, 1)
        self.assertEqual(seqs, list(range(1, 51)))
        self.assertEqual([e.seq for e in sink.events], seqs)
        self.assertEqual(frameOf(sink.events[7]), frameOf(Message(U, b"m7")))
        self.assertEqual(len(self.redis.streams[b"chatd:stream"]), 1)

    def test_a_reply_comes_after_local_delivery(self) -> None:
        a, sink = self.node("a")
        seen: list[int] = []
        a.submit(Message(U, b"x")).addCallback(lambda _: seen.append(len(sink.events)))
        self.clock.advance(0)
        self.assertEqual(seen, [1])

    def test_two_nodes_deliver_one_order(self) -> None:
        a, sinkA = self.node("a")
        b, sinkB = self.node("b")
        for i in range(20):
            a.submit(Message(U, b"a%d" % i))
            b.submit(Message(U, b"b%d" % i))
            if i % 5 == 4:
                self.clock.advance(0)
        self.clock.advance(0)
        frames = [(e.seq, frameOf(e)) for e in sinkA.events]
        self.assertEqual(frames, [(e.seq, frameOf(e)) for e in sinkB.events])
        self.assertEqual([s for s, _ in frames], list(range(1, 41)))
        self.assertEqual((a.seq.gaps, b.seq.gaps), (0, 0))
        # Each node read every event, its own and the other's (one stream).
        self.assertEqual(
            (a.status()["events_read"], b.status()["events_read"]), (40, 40)
        )

    def test_unavailable_until_joined(self) -> None:
        node = ClusterNode(TARGET, "a", TTL, self.clock, connect=self.redis.connect)
        self.refused(node.submit(Message(U, b"early")))
        self.refused(node.claim(b"bob"))

    def test_leaves_owed_while_redis_is_away(self) -> None:
        """A LEAVE is kept and sequenced when Redis is back; a user whose
        JOIN never reached Redis leaves no LEAVE behind."""
        a, sink = self.node("a")
        alice = self.result(a.claim(b"alice"))
        self.result(a.submit(Join(alice)))
        self.redis.down()
        self.assertFalse(a.linkUp)
        bob = User(999, 33, b"bob")
        self.refused(a.submit(Join(bob)))
        self.assertEqual(self.result(a.submit(Leave(bob, LeaveReason.QUIT))), 0)
        self.refused(a.submit(Leave(alice, LeaveReason.QUIT)))
        a.release(alice)
        self.redis.up()
        self.clock.advance(0)
        self.assertEqual(
            [frameOf(e) for e in sink.events],
            [frameOf(Join(alice)), frameOf(Leave(alice, LeaveReason.QUIT))],
        )
        self.assertEqual(self.redis.hashes.get(b"chatd:users"), None)
        self.assertIsNone(self.key("name:alice"))

    def test_a_gap_is_counted_and_who_rebuilt(self) -> None:
        f = FakeFactory()
        a, sink = self.node("a", f)
        ghost = User(7, 33, b"ghost")
        f.hub.replica.deliver(Join(ghost))  # its LEAVE is in the gap
        missed = User(8, 37, b"missed")  # its JOIN is in the gap
        self.redis.hash(b"chatd:users")[b"8"] = missed.entry
        self.redis.incrby(b"chatd:seq", 5)  # entries 1-5 trimmed away:
        self.redis.hash(b"chatd:streamlast")[b"stream"] = b"5"
        self.assertEqual(self.result(a.submit(Message(U, b"after"))), 6)
        self.clock.advance(0)
        self.assertEqual((a.seq.gaps, a.who.rebuilds), (1, 1))
        self.assertEqual([u.entry for u in f.hub.replica.active], [missed.entry])


class LeaseTests(FakeClusterCase):
    def test_names_are_unique_across_nodes(self) -> None:
        a, _ = self.node("a")
        b, _ = self.node("b")
        bob = self.result(a.claim(b"Bob"))
        self.assertEqual((bob.id, bob.name), (1, b"Bob"))
        self.assertIsNone(self.result(b.claim(b"bOB")))  # NAME_TAKEN
        self.assertEqual(self.result(b.claim(b"carol")).id, 2)  # no id spent
        self.assertEqual(self.key("name:bob"), b"a")
        released = a.releaseName(bob.name)
        assert released is not None
        self.result(released)
        self.assertIsNone(self.key("name:bob"))
        self.assertIsNotNone(self.result(b.claim(b"bob")))

    def test_names_are_renewed_with_the_lease(self) -> None:
        a, _ = self.node("a")
        self.result(a.claim(b"bob"))
        self.beats(10)  # two TTLs
        self.assertEqual(self.key("name:bob"), b"a")

    def test_claims_fail_while_redis_is_away_and_releases_wait(self) -> None:
        a, _ = self.node("a")
        bob = self.result(a.claim(b"bob"))
        self.redis.down()
        self.refused(a.claim(b"carol"))
        self.assertIsNone(a.releaseName(bob.name))
        self.assertEqual(self.key("name:bob"), b"a")
        self.redis.up()
        self.clock.advance(0)
        self.assertIsNone(self.key("name:bob"))


class MembershipTests(FakeClusterCase):
    def test_a_lapsed_node_is_reaped_exactly_once(self) -> None:
        a, sinkA = self.node("a")
        b, _ = self.node("b")
        c, _ = self.node("c")
        for name in (b"x", b"y"):
            self.result(c.submit(Join(self.result(c.claim(name)))))
        c.membership.heartbeat.stop()  # c dies: no clean stop
        c.standing.stopping = True
        self.beats(6)  # past its TTL: both a and b see it lapse
        leaves = [e for e in sinkA.events if isinstance(e, Leave)]
        self.assertEqual(
            [(e.user.name, e.reason) for e in leaves],
            [(b"x", LeaveReason.ERROR), (b"y", LeaveReason.ERROR)],
        )
        self.assertNotIn(b"c", self.redis.sets[b"chatd:nodes"])
        self.assertIsNotNone(self.result(b.claim(b"X")))

    def test_own_lease_gone_cuts_users_and_joins_again(self) -> None:
        f = FakeFactory()
        a, _ = self.node("a", f)
        self.joined(a, f, b"alice")
        token = a.standing.token
        self.redis.cmd_DEL(b"chatd:node:a")  # declared gone
        self.beats(1)
        closed = f.users[0][1].session.closed
        self.assertEqual(closed, [(LeaveReason.ERROR, ErrorCode.SHUTDOWN, LOST)])
        self.beats(1)
        self.assertTrue(a.registered)
        self.assertNotEqual(a.standing.token, token)

    def test_a_reply_saying_the_lease_is_gone(self) -> None:
        """A submit refused with LEASE lost (same epoch): fenced."""
        a, _ = self.node("a")
        self.redis.cmd_DEL(b"chatd:node:a")
        self.refused(a.submit(Message(U, b"late")))
        self.assertFalse(a.registered)

    def test_no_contact_for_a_ttl_cuts_users(self) -> None:
        f = FakeFactory()
        a, _ = self.node("a", f)
        self.joined(a, f, b"alice")
        self.redis.down()
        self.beats(4)
        self.assertEqual(f.users[0][1].session.closed, [])
        self.beats(2)
        self.assertEqual(len(f.users[0][1].session.closed), 1)
        self.assertFalse(a.registered)

    def test_redis_lost_its_state_registers_again(self) -> None:
        """Epoch gone (and the scripts): the next beat reloads them,
        registers again with the users, reads the new stream from 1."""
        f = FakeFactory()
        a, sink = self.node("a", f)
        alice = self.joined(a, f, b"alice")
        self.redis.flush()
        self.beats(2)
        self.assertEqual((a.registered, a.membership.resets), (True, 1))
        self.assertEqual(self.key("name:alice"), b"a")
        self.assertEqual(self.redis.hashes[b"chatd:users"], {b"1": alice.entry})
        self.assertEqual(self.result(a.submit(Message(alice, b"new"))), 1)
        self.assertEqual(sink.events[-1].seq, 1)
        self.assertEqual(f.users[0][1].session.closed, [])

    def test_a_name_held_twice_goes_to_the_earlier_user(self) -> None:
        fa, fb = FakeFactory(), FakeFactory()
        a, _ = self.node("a", fa)
        b, _ = self.node("b", fb)
        self.joined(a, fa, b"alice")
        self.redis.flush()
        self.clock.advance(0)
        self.result(b.membership.recover())  # b first, then a newcomer on b
        self.assertTrue(b.registered)
        other = self.joined(b, fb, b"ALICE")
        self.result(a.membership.recover())  # a's alice was active first
        self.assertEqual(self.key("name:alice"), b"a")
        self.result(Deferred.fromCoroutine(b.membership.renew()))
        self.assertEqual(
            fb.users[0][1].session.closed,
            [(LeaveReason.ERROR, ErrorCode.SHUTDOWN, NAME_LOST)],
        )
        self.assertEqual(fa.users[0][1].session.closed, [])
        self.assertGreater(other.id, 1)

    def test_a_live_node_name_is_never_taken_over(self) -> None:
        a, _ = self.node("a")
        token = self.key("node:a")
        twin = ClusterNode(TARGET, "a", TTL, self.clock, connect=self.redis.connect)
        why: list[str] = []
        twin.fatal = why.append
        twin.start(None)
        self.beats(7)  # it waits the lease out; a renews it meanwhile
        self.assertEqual(len(why), 1)
        self.assertIn("node name a is held by a live node", why[0])
        self.assertFalse(twin.registered)
        self.assertEqual(self.key("node:a"), token)

    def test_stop_resigns_and_reaps_itself(self) -> None:
        a, _ = self.node("a")
        b, sinkB = self.node("b")
        self.result(a.submit(Join(self.result(a.claim(b"x")))))
        self.result(a.stop())
        self.assertIsNone(self.key("node:a"))
        self.assertIsNone(self.key("name:x"))
        self.assertIsInstance(sinkB.events[-1], Leave)
        self.assertFalse(a.linkUp)
