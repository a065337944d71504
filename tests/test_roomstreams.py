"""Per-room streams with ``--redis``, in memory (docs/cluster.md,
"Per-room streams"): two whole nodes on one fake Redis.  A node reads the
cluster's stream and the streams of the rooms its users are in, nothing
else; one order per room across nodes; a first local member gets all
after its join and nothing before; the last one leaving stops the
reading; a resume brings the user's rooms to its new node, history and
all."""

from __future__ import annotations

from chatd.cluster.streammerge import MAIN, roomStream
from chatd.wire import FrameType as T
from tests.memory import Peer
from tests.test_redis_resume import Node, RedisResumeCase


class RoomStreamCase(RedisResumeCase):
    def enter(self, peer: Peer, room: bytes) -> None:
        peer.send(T.ENTER, room)
        self.assertIn(T.ROOM_JOIN, peer.types())

    def roomSaid(self, peer: Peer) -> list[bytes]:
        """The texts of the ROOM_MESSAGEs ``peer`` got since last asked."""
        return [p.rsplit(b".", 1)[1] for t, p in peer.received() if t == T.ROOM_MESSAGE]

    def numbered(self, peer: Peer) -> list[tuple[int, bytes]]:
        """(number, text) of its ROOM_MESSAGEs, from their MARKs."""
        frames = peer.received()
        return [
            (int(mark.rsplit(b".", 1)[1]), payload.rsplit(b".", 1)[1])
            for (t, mark), (u, payload) in zip(frames, frames[1:], strict=False)
            if t == T.MARK and u == T.ROOM_MESSAGE
        ]

    def reads(self, node: Node) -> set[bytes]:
        return set(node.node.seq.streams)


class WhoReadsWhatTests(RoomStreamCase):
    def test_nodes_whose_users_share_no_room_read_only_their_own(self) -> None:
        ann, _ = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.enter(ann, b"ra")
        self.enter(bob, b"rb")
        self.assertEqual(self.reads(self.a), {MAIN, roomStream(b"ra")})
        self.assertEqual(self.reads(self.b), {MAIN, roomStream(b"rb")})
        readA, readB = self.a.node.seq.eventsRead, self.b.node.seq.eventsRead
        for i in range(10):
            ann.send(T.ROOM_SAY, b"ra.a%d" % i)
            bob.send(T.ROOM_SAY, b"rb.b%d" % i)
            self.clock.advance(0)
        self.assertEqual(self.roomSaid(ann), [b"a%d" % i for i in range(10)])
        self.assertEqual(self.roomSaid(bob), [b"b%d" % i for i in range(10)])
        # Each read its own room's ten messages, not the other's.
        self.assertEqual(self.a.node.seq.eventsRead - readA, 10)
        self.assertEqual(self.b.node.seq.eventsRead - readB, 10)
        streams = self.redis.streams
        self.assertEqual(len(streams[b"chatd:roomstream:ra"]), 10)
        for command in self.redis.commands:
            if command[0] == b"XREAD" and b"chatd:roomstream:rb" in command:
                self.assertNotIn(b"chatd:roomstream:ra", command)
        # Neither lags behind for numbers of the room it does not read.
        self.wait(6)
        for node in (self.a, self.b):
            self.assertEqual((node.node.seq.clusterSeq, node.node.seq.lag), (24, 0))
        # WHO of a room is every node's.
        ann.send(T.ROOM_WHO, b"rb")
        self.assertIn(b"bob", b"".join(p for _, p in ann.received()))

    def test_a_room_on_both_nodes_has_one_order(self) -> None:
        ann, _ = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.enter(ann, b"r")
        self.enter(bob, b"r")
        ann.received()
        for i in range(10):
            ann.send(T.ROOM_SAY, b"r.a%d" % i)
            bob.send(T.ROOM_SAY, b"r.b%d" % i)
            if i % 3 == 0:
                bob.send(T.TOPIC, b"r.t%d" % i)  # the cluster's stream
            self.clock.advance(0)

        def order(peer: Peer) -> list[tuple[int, bytes]]:
            return [(t, p) for t, p in peer.received() if t != T.MARK]

        seenA, seenB = order(ann), order(bob)
        self.assertEqual(seenA, seenB)
        self.assertEqual(len([1 for t, _ in seenA if t == T.ROOM_MESSAGE]), 20)
        self.assertEqual(len([1 for t, _ in seenA if t == T.ROOM_TOPIC]), 4)

    def test_a_first_member_gets_all_after_its_join_none_before(self) -> None:
        ann, _ = self.speaker(self.a, b"ann")
        bob, _ = self.speaker(self.b, b"bob")
        self.enter(bob, b"r")
        for i in range(3):
            bob.send(T.ROOM_SAY, b"r.before%d" % i)
        self.assertNotIn(roomStream(b"r"), self.reads(self.a))
        ann.received()
        ann.send(T.ENTER, b"r")
        bob.send(T.ROOM_SAY, b"r.after")
        self.clock.advance(0)
        got = [p for t, p in ann.received() if t != T.MARK]
        self.assertEqual(got, [b"r.1.33.ann", b"r.2.40.bob.after"])
        # Its history was read from the room's stream: HISTORY has it all.
        ann.send(T.HISTORY, b"r.10")
        said = [p.rsplit(b".", 1)[1] for t, p in ann.received() if t == T.ROOM_MESSAGE]
        self.assertEqual(said, [b"before0", b"before1", b"before2", b"after"])

    def test_the_last_local_member_leaving_stops_the_reading(self) -> None:
        ann, _ = self.speaker(self.a, b"ann")
        cat, _ = self.speaker(self.a, b"cat")
        bob, _ = self.speaker(self.b, b"bob")
        for peer in (ann, cat, bob):
            self.enter(peer, b"r")
        ann.send(T.PART, b"r")
        self.clock.advance(0)
        self.assertIn(roomStream(b"r"), self.reads(self.a))
        cat.send(T.BYE)
        self.clock.advance(0)
        self.assertEqual(self.reads(self.a), {MAIN})
        read = self.a.node.seq.eventsRead
        for i in range(5):
            bob.send(T.ROOM_SAY, b"r.m%d" % i)
        self.clock.advance(0)
        self.assertEqual(self.a.node.seq.eventsRead, read)
        self.assertEqual(len(self.roomSaid(bob)), 5)
        # And it reads the room again with a member again, from then on.
        self.enter(ann, b"r")
        bob.send(T.ROOM_SAY, b"r.back")
        self.assertEqual(self.roomSaid(ann), [b"back"])


class ResumeBringsTheRoomsTests(RoomStreamCase):
    def test_a_resume_on_a_node_not_reading_the_room(self) -> None:
        ann, token = self.speaker(self.a, b"ann")
        dan, _ = self.speaker(self.a, b"dan")
        self.speaker(self.b, b"bob")
        for peer in (ann, dan):
            self.enter(peer, b"r")
        dan.send(T.ROOM_SAY, b"r.one")
        [(one, _)] = self.numbered(ann)
        ann.lose()
        dan.send(T.ROOM_SAY, b"r.two")
        self.clock.advance(0)
        self.assertNotIn(roomStream(b"r"), self.reads(self.b))
        again = self.b.connect()
        again.send(T.VERSION, b"1.2")
        again.send(T.RESUME, token)
        again.send(T.SINCE, b"r.%d" % one)
        again.send(T.READY)
        self.clock.advance(0)
        self.assertEqual([t for _, t in self.numbered(again)], [b"two"])
        self.assertIn(roomStream(b"r"), self.reads(self.b))
        dan.send(T.ROOM_SAY, b"r.three")
        self.assertEqual(self.roomSaid(again), [b"three"])
        # a's ann went to b: a still reads r for dan, and only that.
        self.assertEqual(self.a.node.seq.rooms.rooms(), [b"r"])
        self.assertEqual(self.b.node.seq.rooms.rooms(), [b"r"])
