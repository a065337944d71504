"""End to end: per-room streams (issue 20) on two real ``twistd chatd
--redis`` nodes and a real redis-server.  A node whose users share no
room with the other's does not read that room's messages (``/status``
``cluster.events_read``), and stops reading a room when its last member
there leaves; a room with members on both nodes keeps one order, and a
user who is its node's first member of a room gets everything after its
ROOM_JOIN and nothing before (docs/cluster.md, "Per-room streams")."""

from __future__ import annotations

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.test_cluster_e2e import ClusterCase

ADMIN = ("--admin", "tcp:0:interface=127.0.0.1")


class RoomStreamsE2ETests(ClusterCase):
    @defer.inlineCallbacks
    def member(self, daemon, name: str, room: bytes):  # type: ignore[no-untyped-def]
        """A 1.2 user on ``daemon``, in ``room`` (its ROOM_JOIN read)."""
        client, entry = yield self.handshake(daemon, name)
        client.send(T.VERSION, b"1.2")
        self.assertEqual((yield client.nextOf(T.VERSION)), b"1.2")
        client.send(T.ENTER, room)
        self.assertEqual((yield client.nextOf(T.ROOM_JOIN)), room + b"." + entry)
        return client

    @defer.inlineCallbacks
    def heard(self, client, n: int):  # type: ignore[no-untyped-def]
        """The payloads of its next ``n`` ROOM_MESSAGEs."""
        got = []
        for _ in range(n):
            got.append((yield client.nextOf(T.ROOM_MESSAGE)))
        return got

    @defer.inlineCallbacks
    def talk(self, rounds: int, hear: int, *speakers):  # type: ignore[no-untyped-def]
        """Each (client, room, tag) says ``rounds`` texts, in turn; then
        what each heard (``hear`` ROOM_MESSAGEs)."""
        for i in range(rounds):
            for client, room, tag in speakers:
                client.send(T.ROOM_SAY, b"%s.%s%d" % (room, tag, i))
        heard = []
        for client, _, _ in speakers:
            heard.append((yield self.heard(client, hear)))
        return heard

    @defer.inlineCallbacks
    def eventsRead(self, daemon):  # type: ignore[no-untyped-def]
        _, status = yield self.admin(daemon, b"GET", b"/status")
        return status["cluster"]["events_read"]

    @defer.inlineCallbacks
    def bothRead(self, *daemons):  # type: ignore[no-untyped-def]
        got = []
        for daemon in daemons:
            got.append((yield self.eventsRead(daemon)))
        return got

    @defer.inlineCallbacks
    def test_no_shared_room_each_node_reads_only_its_own(self):
        n1 = yield self.node("n1", *ADMIN)
        n2 = yield self.node("n2", *ADMIN)
        bob = yield self.member(n2, "bob", b"rb")
        ann = yield self.member(n1, "ann", b"ra")
        was = yield self.bothRead(n1, n2)
        heardA, heardB = yield self.talk(20, 20, (ann, b"ra", b"a"), (bob, b"rb", b"b"))
        self.assertEqual([p.rsplit(b".", 1)[1] for p in heardA][-1], b"a19")
        self.assertEqual([p.rsplit(b".", 1)[1] for p in heardB][-1], b"b19")
        now = yield self.bothRead(n1, n2)
        for before, after in zip(was, now, strict=True):
            # Its own room's 20 (and at most ann's ROOM_JOIN), not 40.
            self.assertIn(after - before, (20, 21))
        # The last member leaving: n1 reads none of ra's messages more.
        carl = yield self.member(n2, "carl", b"ra")
        ann.send(T.PART, b"ra")
        yield ann.nextOf(T.ROOM_LEAVE)
        was = yield self.eventsRead(n1)
        for i in range(10):
            carl.send(T.ROOM_SAY, b"ra.c%d" % i)
        yield self.heard(carl, 10)
        ann.send(T.ROOM_WHO, b"ra")  # a reply from n1 after carl's messages
        yield ann.nextOf(T.USERS)
        self.assertEqual((yield self.eventsRead(n1)), was)

    @defer.inlineCallbacks
    def test_one_order_across_nodes_and_a_first_member_from_its_join(self):
        n1 = yield self.node("n1")
        n2 = yield self.node("n2")
        bob = yield self.member(n2, "bob", b"r")
        bob.send(T.ROOM_SAY, b"r.before")
        yield self.heard(bob, 1)
        ann = yield self.member(n1, "ann", b"r")  # n1's first member of r
        seenA, seenB = yield self.talk(20, 40, (ann, b"r", b"a"), (bob, b"r", b"b"))
        self.assertEqual(seenA, seenB)
        self.assertNotIn(b"before", b" ".join(seenA))
        mine = [p.rsplit(b".", 1)[1] for p in seenA if b".ann." in p]
        self.assertEqual(mine, [b"a%d" % i for i in range(20)])
