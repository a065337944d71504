"""ClusterNode against a real redis-server (in this process, over its socket):
batching, one order for every node, names across nodes, reaping once."""

from __future__ import annotations

import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer

from chatd.cluster.membership import NAME_LOST
from chatd.cluster.node import ClusterNode
from chatd.cluster.options import parseRedisURL
from chatd.cluster.redislink import ClusterUnavailable, connectRedis
from chatd.cluster.streamseq import MAX_IN_FLIGHT
from chatd.core.events import Event, Join, Leave, Message
from chatd.core.roster import Replica, User
from chatd.core.sequencer import IEventSink
from chatd.wire import ErrorCode, LeaveReason
from chatd.wire.eventframes import frameOf
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
    return [(e.seq, frameOf(e)) for e in sink.events]


class FakeSession:
    def __init__(self) -> None:
        self.closed: list[tuple[object, ...]] = []

    def close(self, *args: object) -> None:
        self.closed.append(args)


class FakeProto:
    def __init__(self) -> None:
        self.session = FakeSession()


class FakeFactory:
    """What a node asks of the ChatFactory: its named connections, the
    room's replica."""

    def __init__(self) -> None:
        self.users: list[tuple[User, FakeProto]] = []
        self.hub = type("Hub", (), {"replica": Replica()})()

    @property
    def connections(self) -> list[FakeProto]:
        return [proto for _, proto in self.users]

    def named(self) -> list[tuple[User, FakeProto]]:
        return list(self.users)

    def add(self, user: User) -> FakeProto:
        proto = FakeProto()
        self.users.append((user, proto))
        return proto


@skipUnlessRedis
class RedisCase(unittest.TestCase):
    """A redis-server of the test's own, and nodes on it."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield startRedis(self)
        self.target = parseRedisURL(self.redis.url)

    @defer.inlineCallbacks
    def node(self, name: str, ttl: float = 10.0, factory: FakeFactory | None = None):
        node = ClusterNode(self.target, name, ttl, reactor)
        sink = Collect()
        if factory is not None:  # first: it has the event when sink fires
            node.subscribe(factory.hub.replica)
        node.subscribe(sink)
        node.start(factory)
        self.addCleanup(node.stop)
        yield node.whenJoined()
        return node, sink

    @defer.inlineCallbacks
    def redisCommand(self, *args):
        conn = connectRedis(reactor, self.target, 5)
        self.addCleanup(conn.disconnect)
        yield conn.handler._factory.deferred
        result = yield conn.execute_command(*args)
        return result


class ClusterNodeTests(RedisCase):
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
        self.assertEqual(frameOf(sinkA.events[7]), frameOf(Message(alice, b"m7")))
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
        self.assertEqual((a.seq.gaps, b.seq.gaps), (0, 0))

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
        c.membership.heartbeat.stop()  # c "dies": its lease goes, its records stay
        yield self.redisCommand("DEL", "chatd:node:c")
        c.standing.token = ""
        yield defer.gatherResults(
            [defer.ensureDeferred(n.membership.reap("c")) for n in (a, b, a)]
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
        lost = a.link.cmd.handler._factory.pool[0].whenDisconnected()
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
        # Each stream tells its own last number: entries 1-5 were trimmed.
        yield self.redisCommand("HSET", "chatd:streamlast", "stream", 5)
        yield a.submit(Message(User(1, 33, b"u"), b"after the gap"))
        events = yield sink.until(1)
        self.assertEqual(events[0].seq, 6)
        self.assertEqual(a.seq.gaps, 1)


class RedisLostItsStateTests(RedisCase):
    """Redis back empty (FLUSHALL here): nodes register again with their
    users, and a name held twice goes to the earlier activation."""

    @defer.inlineCallbacks
    def joined(self, node: ClusterNode, factory: FakeFactory, sink: Collect, name):
        user = yield node.claim(name)
        factory.add(user)
        n = len(sink.events)
        yield node.submit(Join(user))
        yield sink.until(n + 1)
        return user

    @defer.inlineCallbacks
    def test_earlier_activation_keeps_a_name_held_twice(self):
        fa, fb = FakeFactory(), FakeFactory()
        a, sinkA = yield self.node("a", factory=fa)
        b, sinkB = yield self.node("b", factory=fb)
        for n in (a, b):
            n.membership.heartbeat.stop()
        alice = yield self.joined(a, fa, sinkA, b"alice")
        bob = yield self.joined(b, fb, sinkB, b"bob")
        yield self.redisCommand("FLUSHALL")
        markA, markB = len(sinkA.events), len(sinkB.events)
        # b notices first and registers again, with bob.
        yield defer.ensureDeferred(b.membership.renew())
        self.assertEqual((b.registered, b.membership.resets), (True, 1))
        self.assertEqual((yield self.redisCommand("GET", "chatd:name:bob")), b"b")
        self.assertEqual(
            (yield self.redisCommand("HGET", "chatd:users", bob.id)), bob.entry
        )
        # Before a notices, a newcomer on b takes the free name "alice".
        other = yield self.joined(b, fb, sinkB, b"ALICE")
        self.assertGreater(other.id, max(alice.id, bob.id))  # ids not reused
        # a registers again: its alice was active first and keeps the name.
        yield defer.ensureDeferred(a.membership.renew())
        self.assertEqual((a.registered, a.membership.resets), (True, 1))
        self.assertEqual((yield self.redisCommand("GET", "chatd:name:alice")), b"a")
        self.assertEqual(fa.users[0][1].session.closed, [])
        # b's heartbeat finds the name gone and cuts its own ALICE.
        yield defer.ensureDeferred(b.membership.renew())
        self.assertEqual(
            fb.users[1][1].session.closed,
            [(LeaveReason.ERROR, ErrorCode.SHUTDOWN, NAME_LOST)],
        )
        self.assertEqual(fb.users[0][1].session.closed, [])
        # One order in the new stream, read from its start by both: the
        # newcomer's JOIN, then alice's JOIN again (she displaced it).
        yield sinkB.until(markB + 2)
        yield sinkA.until(markA + 2)
        newB = seen(sinkB)[markB:]
        self.assertEqual(newB, [(1, frameOf(Join(other))), (2, frameOf(Join(alice)))])
        self.assertEqual(seen(sinkA)[markA:], newB)
        self.assertEqual(fa.hub.replica.find(b"alice").id, alice.id)

    @defer.inlineCallbacks
    def test_the_sequence_going_back_is_noticed_at_once(self):
        """A node reading the new stream's first entry before its heartbeat
        noticed: it delivers nothing stale, registers again at once, and
        delivers the new stream from its start, once."""
        f = FakeFactory()
        a, sinkA = yield self.node("a", factory=f)
        alice = yield self.joined(a, f, sinkA, b"alice")
        yield a.submit(Message(alice, b"before"))
        yield self.redisCommand("FLUSHALL")
        mark = len(sinkA.events)
        b, _ = yield self.node("b")  # registers first: a new epoch
        yield b.submit(Message(User(99, 33, b"zed"), b"new"))
        events = yield sinkA.until(mark + 1)
        self.assertEqual(
            [(e.seq, frameOf(e)) for e in events[mark:]],
            [(1, frameOf(Message(User(99, 33, b"zed"), b"new")))],
        )
        self.assertEqual(a.membership.resets, 1)
        self.assertTrue(a.registered)
        self.assertEqual(
            (yield self.redisCommand("HGET", "chatd:users", alice.id)), alice.entry
        )
        self.assertEqual((yield self.redisCommand("GET", "chatd:name:alice")), b"a")
        yield a.submit(Message(alice, b"after"))
        self.assertEqual(sinkA.events[-1].seq, 2)
        self.assertEqual(len(sinkA.events), mark + 2)

    @defer.inlineCallbacks
    def test_a_live_node_name_is_never_taken_over(self):
        """A second node under a live node's name waits out the lease, finds
        it renewed, and refuses; the first keeps its lease."""
        # A TTL that a's renewals (every TTL/5) cannot miss on a busy machine.
        a, _ = yield self.node("a", ttl=3.0)
        token = yield self.redisCommand("GET", "chatd:node:a")
        twin = ClusterNode(self.target, "a", 3.0, reactor)
        refused: defer.Deferred = defer.Deferred()
        twin.fatal = refused.callback
        twin.start(None)
        self.addCleanup(twin.stop)
        why = yield refused
        self.assertIn("node name a is held by a live node", why)
        self.assertFalse(twin.registered)
        self.assertEqual((yield self.redisCommand("GET", "chatd:node:a")), token)
        self.assertTrue(a.registered)

    @defer.inlineCallbacks
    def test_a_dead_node_name_is_taken_over(self):
        """A node killed (its lease left to lapse): one started under its
        name joins once the lease is gone, after reaping its users."""
        dead, _ = yield self.node("c", ttl=1.0)
        user = yield dead.claim(b"x")
        yield dead.submit(Join(user))
        dead.membership.heartbeat.stop()
        dead.standing.stopping = True  # dies: no clean stop
        heir, sink = yield self.node("c", ttl=1.0)
        self.assertNotEqual(heir.standing.token, dead.standing.token)
        self.assertEqual((yield self.redisCommand("HLEN", "chatd:users")), 0)
        self.assertIsNotNone((yield heir.claim(b"X")))

    @defer.inlineCallbacks
    def test_a_gap_rebuilds_who_from_the_snapshot(self):
        """After a gap the replica is what chatd:users says (a JOIN and a
        LEAVE were lost in the gap)."""
        f = FakeFactory()
        a, sink = yield self.node("a", factory=f)
        ghost = User(7, 33, b"ghost")
        f.hub.replica.deliver(Join(ghost))  # its LEAVE is in the gap
        missed = User(8, 37, b"missed")  # its JOIN is in the gap
        yield self.redisCommand("HSET", "chatd:users", 8, missed.entry)
        yield self.redisCommand("INCRBY", "chatd:seq", 5)
        # Each stream tells its own last number: entries 1-5 were trimmed.
        yield self.redisCommand("HSET", "chatd:streamlast", "stream", 5)
        yield a.submit(Message(User(1, 33, b"u"), b"after the gap"))
        self.assertIsNotNone(a.who.rebuilding)
        yield a.who.rebuilding
        self.assertEqual((a.seq.gaps, a.who.rebuilds), (1, 1))
        self.assertEqual([u.entry for u in f.hub.replica.active], [missed.entry])
