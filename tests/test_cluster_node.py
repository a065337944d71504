"""ClusterNode against a real redis-server (in this process, over its socket):
batching, one order for every node, names across nodes, reaping once."""

from __future__ import annotations

import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer

from chatd.cluster.node import (
    MAX_IN_FLIGHT,
    ClusterNode,
    ClusterUnavailable,
    connectRedis,
)
from chatd.cluster.options import parseRedisURL
from chatd.core.events import Event, Join, Leave, Message
from chatd.core.roster import User
from chatd.core.sequencer import IEventSink
from chatd.wire import LeaveReason
from tests.redisserver import skipUnlessRedis, startRedis


@implementer(IEventSink)
class Collect:
    """Every delivered event; ``until(n)`` fires once there are n."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._waiting: list[tuple[int, defer.Deferred]] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)
        for entry in list(self._waiting):
            if len(self.events) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(self.events)

    def until(self, n: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((n, d))
        if len(self.events) >= n:
            self._waiting.remove((n, d))
            d.callback(self.events)
        return d


def seen(sink: Collect) -> list[tuple[int, bytes]]:
    return [(e.seq, e.frame) for e in sink.events]


@skipUnlessRedis
class ClusterNodeTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield startRedis(self)
        self.target = parseRedisURL(self.redis.url)

    @defer.inlineCallbacks
    def node(self, name: str, ttl: float = 10.0):
        node = ClusterNode(self.target, name, ttl, reactor)
        sink = Collect()
        node.subscribe(sink)
        node.start(None)
        self.addCleanup(node.stop)
        yield node.whenJoined()
        return node, sink

    @defer.inlineCallbacks
    def redisCommand(self, *args):
        conn = connectRedis(self.target, 5)
        self.addCleanup(conn.disconnect)
        yield conn._factory.deferred
        result = yield conn.execute_command(*args)
        return result

    @defer.inlineCallbacks
    def test_one_turn_is_one_entry_and_one_order_everywhere(self):
        """50 SAYs of one turn are one EVALSHA and one stream entry; both
        nodes deliver them, numbered alike, in submission order."""
        a, sinkA = yield self.node("a")
        b, sinkB = yield self.node("b")
        alice = User(1, 33, b"alice")
        before = a.commands
        ds = [a.submit(Message(alice, b"m%d" % i)) for i in range(50)]
        seqs = yield defer.gatherResults(ds)
        self.assertEqual(a.commands - before, 1)
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 50)))
        yield sinkA.until(50)
        yield sinkB.until(50)
        self.assertEqual(seen(sinkA), seen(sinkB))
        self.assertEqual([e.seq for e in sinkA.events], seqs)
        self.assertEqual(sinkA.events[7].frame, Message(alice, b"m7").frame)
        self.assertEqual((yield self.redisCommand("XLEN", "chatd:stream")), 1)

    @defer.inlineCallbacks
    def test_interleaved_submitters_agree(self):
        """Two nodes submitting at once: one order, no gaps."""
        a, sinkA = yield self.node("a")
        b, sinkB = yield self.node("b")
        u, v = User(1, 33, b"u"), User(2, 37, b"v")
        for i in range(20):
            a.submit(Message(u, b"a%d" % i))
            b.submit(Message(v, b"b%d" % i))
            yield defer.succeed(None)
            if i % 5 == 4:
                a.flush()
                b.flush()
        yield sinkA.until(40)
        yield sinkB.until(40)
        self.assertEqual(seen(sinkA), seen(sinkB))
        numbers = [e.seq for e in sinkA.events]
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + 40)))
        self.assertEqual((a.gaps, b.gaps), (0, 0))

    @defer.inlineCallbacks
    def test_names_are_unique_across_nodes(self):
        a, _ = yield self.node("a")
        b, _ = yield self.node("b")
        bob = yield a.claim(b"Bob")
        self.assertEqual(bob.name, b"Bob")
        self.assertIsNone((yield b.claim(b"bOB")))
        other = yield b.claim(b"carol")
        self.assertGreater(other.id, bob.id)
        yield a.releaseName(bob.name)
        again = yield b.claim(b"bob")
        self.assertIsNotNone(again)

    @defer.inlineCallbacks
    def test_a_starting_node_knows_who_is_active(self):
        a, _ = yield self.node("a")
        alice = yield a.claim(b"alice")
        yield a.submit(Join(alice))
        _, sinkB = yield self.node("b")
        joins = [e for e in sinkB.events if isinstance(e, Join)]
        self.assertEqual([j.user.entry for j in joins], [alice.entry])

    @defer.inlineCallbacks
    def test_dead_node_is_reaped_exactly_once(self):
        """Two nodes race to reap a node whose lease is gone: one LEAVE
        error per user, and its names are free again."""
        a, sinkA = yield self.node("a")
        b, _ = yield self.node("b")
        c, _ = yield self.node("c")
        users = []
        for name in (b"x", b"y"):
            users.append((yield c.claim(name)))
        for user in users:
            yield c.submit(Join(user))
        yield sinkA.until(2)
        c._heartbeat.stop()  # c "dies": its lease goes, its records stay
        yield self.redisCommand("DEL", "chatd:node:c")
        c.token = ""
        yield defer.gatherResults(
            [defer.ensureDeferred(n._reap("c")) for n in (a, b, a)]
        )
        yield a.submit(Message(users[0], b"marker"))
        yield sinkA.until(5)
        leaves = [e for e in sinkA.events if isinstance(e, Leave)]
        self.assertEqual(
            sorted((e.user.name, e.reason) for e in leaves),
            [(b"x", LeaveReason.ERROR), (b"y", LeaveReason.ERROR)],
        )
        self.assertIsInstance(sinkA.events[-1], Message)
        self.assertIsNotNone((yield a.claim(b"X")))
        self.assertEqual((yield self.redisCommand("HLEN", "chatd:users")), 0)

    @defer.inlineCallbacks
    def test_lost_lease_refuses_to_sequence(self):
        """A node declared dead cannot sequence (fencing): its submit fails
        UNAVAILABLE and it knows it lost its lease."""
        a, _ = yield self.node("a")
        yield self.redisCommand("DEL", "chatd:node:a")
        d = a.submit(Message(User(1, 33, b"u"), b"late"))
        yield self.assertFailure(d, ClusterUnavailable)
        self.assertFalse(a.registered)

    @defer.inlineCallbacks
    def test_leaves_owed_while_redis_is_away(self):
        """Redis away: a LEAVE is kept (one per user) and sequenced when it is
        back; a user whose JOIN never reached Redis leaves no LEAVE behind."""
        a, sink = yield self.node("a", ttl=2.0)
        alice = yield a.claim(b"alice")
        yield a.submit(Join(alice))
        yield sink.until(1)
        lost = a._cmd._factory.pool[0].whenDisconnected()
        yield self.redis.stop()
        yield lost
        bob = User(999, 33, b"bob")
        yield self.assertFailure(a.submit(Join(bob)), ClusterUnavailable)
        self.assertEqual((yield a.submit(Leave(bob, LeaveReason.QUIT))), 0)
        yield self.assertFailure(
            a.submit(Leave(alice, LeaveReason.QUIT)), ClusterUnavailable
        )
        a.release(alice)
        yield self.redis.start()
        events = yield sink.until(2)
        self.assertEqual(
            [(type(e), e.user.name) for e in events],
            [(Join, b"alice"), (Leave, b"alice")],
        )
        self.assertEqual((yield self.redisCommand("HLEN", "chatd:users")), 0)
        self.assertIsNotNone((yield self.redisCommand("GET", "chatd:node:a")))
        claimed = yield a.claim(b"alice")  # its name was released too
        self.assertIsNotNone(claimed)

    @defer.inlineCallbacks
    def test_a_stuck_redis_holds_a_bounded_number_of_batches(self):
        """Redis frozen: at most MAX_IN_FLIGHT batches wait for it; later
        submits fail at once instead of piling up."""
        a, sink = yield self.node("a")
        user = User(1, 33, b"u")
        self.redis.process.signalProcess(signal.SIGSTOP)
        try:
            waiting = []
            for i in range(MAX_IN_FLIGHT):
                waiting.append(a.submit(Message(user, b"%d" % i)))
                a.flush()
            refused = a.submit(Message(user, b"one too many"))
            self.assertTrue(refused.called)
            yield self.assertFailure(refused, ClusterUnavailable)
        finally:
            self.redis.process.signalProcess(signal.SIGCONT)
        seqs = yield defer.gatherResults(waiting)
        self.assertEqual(len(set(seqs)), MAX_IN_FLIGHT)
        yield sink.until(MAX_IN_FLIGHT)

    @defer.inlineCallbacks
    def test_a_gap_is_counted(self):
        """Numbers missing from the stream (trimmed while a node was away)
        are noticed (counted for /status, and logged)."""
        a, sink = yield self.node("a")
        yield self.redisCommand("INCRBY", "chatd:seq", 5)
        yield a.submit(Message(User(1, 33, b"u"), b"after the gap"))
        events = yield sink.until(1)
        self.assertEqual(events[0].seq, 6)
        self.assertEqual(a.gaps, 1)
