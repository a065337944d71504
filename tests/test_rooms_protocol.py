"""Protocol 1.2's rooms (docs/protocol.md, "Version 1.2"), in memory: the
opt-in, each request, which error wins, one order per room, and that a 1.1
client sees nothing new."""

from __future__ import annotations

from chatd.wire import FrameType as T
from chatd.wire.eventframes import frameOf
from tests.memory import ChatTestCase, Server


class RoomsTests(ChatTestCase):
    def setUp(self) -> None:
        self.server = Server()

    def speaker(self, name: bytes):  # type: ignore[no-untyped-def]
        """An ACTIVE user that asked for 1.2."""
        peer = self.server.active(name)
        peer.send(T.VERSION, b"1.2")
        self.assertEqual(peer.received(), [(T.VERSION, b"1.2")])
        return peer

    def entered(self, peer, room: bytes) -> None:  # type: ignore[no-untyped-def]
        peer.send(T.ENTER, room)
        frames = peer.received()
        self.assertEqual(frames[0][0], T.ROOM_JOIN, frames)

    def drain(self, *peers) -> None:  # type: ignore[no-untyped-def]
        """Forget what each was sent so far (the JOINs of later users)."""
        for peer in peers:
            peer.received()

    def codes(self, peer) -> list[bytes]:  # type: ignore[no-untyped-def]
        return [p.split(b".", 1)[0] for t, p in peer.received() if t == T.ERROR]

    def test_a_1_1_client_sees_no_difference(self) -> None:
        old = self.server.active(b"old")
        for ftype in range(19, 30):
            old.send(ftype, b"dev.hi")
        self.assertEqual(self.codes(old), [b"UNKNOWN_TYPE"] * 11)
        for bad in (b"", b"1.1", b"1.02", b"2.0", b"1.x", b"1.2.3"):
            old.send(T.VERSION, bad)
        self.assertEqual(self.codes(old), [b"UNKNOWN_TYPE"] * 6)
        new = self.speaker(b"new")
        self.entered(new, b"dev")
        new.send(T.ROOM_SAY, b"dev.hi")
        self.assertEqual(new.types(), [T.ROOM_MESSAGE])
        new.send(T.SAY, b"to all")
        self.assertEqual(
            [t for t, _ in old.received()], [T.JOIN, T.MESSAGE]
        )  # its JOIN and the lobby message; nothing of room dev

    def test_version_answers_the_lower(self) -> None:
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.17")  # before HELLO too
        self.assertEqual(peer.received(), [(T.VERSION, b"1.2")])

    def test_enter_say_part_one_order(self) -> None:
        ann, bob, cat = self.speaker(b"ann"), self.speaker(b"bob"), self.speaker(b"cat")
        self.drain(ann, bob, cat)
        self.entered(ann, b"Dev")
        bob.send(T.ENTER, b"dev")  # first spelling kept
        self.assertEqual(bob.received(), [(T.ROOM_JOIN, b"Dev." + bob.entry)])
        self.assertEqual(ann.received(), [(T.ROOM_JOIN, b"Dev." + bob.entry)])
        ann.send(T.ROOM_SAY, b"DEV.one")
        bob.send(T.ROOM_SAY, b"dev.two")
        want = [
            (T.ROOM_MESSAGE, b"Dev." + ann.prefix + b"one"),
            (T.ROOM_MESSAGE, b"Dev." + bob.prefix + b"two"),
        ]
        self.assertEqual(ann.received(), want)
        self.assertEqual(bob.received(), want)
        self.assertEqual(cat.received(), [])  # not a member
        bob.send(T.PART, b"dev")
        leave = (T.ROOM_LEAVE, b"Dev." + bob.entry + b".part")
        self.assertEqual(bob.received(), [leave])  # its acknowledgement
        self.assertEqual(ann.received(), [leave])
        bob.send(T.ROOM_SAY, b"dev.three")
        self.assertEqual(self.codes(bob), [b"NOT_IN_ROOM"])
        self.assertEqual(ann.received(), [])

    def test_which_error_wins(self) -> None:
        fresh = self.server.connect()
        fresh.send(T.VERSION, b"1.2")
        fresh.received()
        fresh.send(T.ENTER, b"bad name")  # NOT_READY before BAD_ROOM
        self.assertEqual(self.codes(fresh), [b"NOT_READY"])
        ann, bob = self.speaker(b"ann"), self.speaker(b"bob")
        self.drain(ann, bob)
        self.entered(ann, b"dev")
        cases = [
            (T.ROOM_SAY, b"bad name.\x00", b"BAD_ROOM"),
            (T.ROOM_SAY, b"nosuch.\x00", b"BAD_TEXT"),  # text before existence
            (T.ROOM_SAY, b"nosuch.hi", b"NO_SUCH_ROOM"),
            (T.ROOM_SAY, b"dev", b"BAD_TEXT"),  # no dot
            (
                T.ROOM_SAY,
                b"dev." + b"x" * 1010,
                b"TOO_LONG",
            ),  # over 1016 - len("dev.2.40.bob.")
            (T.ROOM_SAY, b"dev.hi", b"NOT_IN_ROOM"),
            (T.PART, b"nosuch", b"NO_SUCH_ROOM"),
            (T.PART, b"dev", b"NOT_IN_ROOM"),
            (T.PART, b"lobby", b"BAD_STATE"),
            (T.ROOM_WHO, b"nosuch", b"NO_SUCH_ROOM"),
            (T.TOPIC, b"dev.x", b"NOT_IN_ROOM"),
            (T.TOPIC, b"lobby.x", b"TOPIC_LOCKED"),
            (T.TOPIC, b"dev." + b"t" * 301, b"TOO_LONG"),
            (T.ENTER, b"lobby", b"BAD_STATE"),
        ]
        for ftype, payload, code in cases:
            bob.send(ftype, payload)
            self.assertEqual(self.codes(bob), [code], (ftype, payload))
        ann.send(T.ENTER, b"dev")
        self.assertEqual(self.codes(ann), [b"BAD_STATE"])

    def test_list_who_and_topic(self) -> None:
        ann, bob = self.speaker(b"ann"), self.speaker(b"bob")
        self.server.active(b"old")  # a 1.1 user: in the default room only
        self.drain(ann, bob)
        self.entered(ann, b"dev")
        ann.send(T.TOPIC, b"dev.ship it")
        self.assertEqual(ann.received(), [(T.ROOM_TOPIC, b"dev.ship it")])
        bob.send(T.ENTER, b"dev")  # its JOIN, then the room's topic
        self.assertEqual(
            bob.received(),
            [(T.ROOM_JOIN, b"dev." + bob.entry), (T.ROOM_TOPIC, b"dev.ship it")],
        )
        bob.send(T.LIST)
        self.assertEqual(
            bob.received(),
            [(T.ROOMS, b"lobby.3.\ndev.2.ship it"), (T.ROOMS, b"")],
        )
        bob.send(T.ROOM_WHO, b"DEV")
        self.assertEqual(
            bob.received(), [(T.USERS, ann.entry + b"\n" + bob.entry), (T.USERS, b"")]
        )
        bob.send(T.ROOM_WHO, b"lobby")  # the default room: WHO
        self.assertEqual(len(bob.received()[0][1].split(b"\n")), 3)

    def test_leaving_the_server_leaves_every_room(self) -> None:
        ann, bob = self.speaker(b"ann"), self.speaker(b"bob")
        self.drain(ann, bob)
        for room in (b"a", b"b"):
            self.entered(ann, room)
            self.entered(bob, room)
        ann.received()
        bob.send(T.BYE)
        self.assertEqual(
            ann.received(),
            [(T.LEAVE, bob.entry + b".quit"),
             (T.ROOM_LEAVE, b"a." + bob.entry + b".quit"),
             (T.ROOM_LEAVE, b"b." + bob.entry + b".quit")],
        )  # fmt: skip
        ann.send(T.LIST)
        self.assertEqual(ann.received()[0], (T.ROOMS, b"lobby.1.\na.1.\nb.1."))
        ann.send(T.PART, b"a")
        ann.received()
        ann.send(T.LIST)  # an emptied room is gone
        self.assertEqual(ann.received()[0], (T.ROOMS, b"lobby.1.\nb.1."))

    def test_replies_keep_request_order(self) -> None:
        ann = self.speaker(b"ann")
        self.entered(ann, b"dev")
        ann.send(T.ROOM_SAY, b"dev.hi")
        ann.send(T.PING, b"p")
        self.assertEqual(ann.types(), [T.ROOM_MESSAGE, T.PONG])

    def test_limits_and_operator_rooms(self) -> None:
        self.server = Server(
            max_rooms_per_user=2, max_rooms=3, rooms=(("news", "daily"), ("open", ""))
        )
        ann, bob = self.speaker(b"ann"), self.speaker(b"bob")
        self.drain(ann, bob)
        ann.send(T.LIST)
        self.assertEqual(
            ann.received()[0], (T.ROOMS, b"lobby.2.\nnews.0.daily\nopen.0.")
        )
        self.entered(ann, b"news")
        ann.send(T.ENTER, b"open")  # lobby + news: two rooms already
        self.assertEqual(self.codes(ann), [b"TOO_MANY_ROOMS"])
        ann.send(T.TOPIC, b"news.mine now")
        self.assertEqual(self.codes(ann), [b"TOPIC_LOCKED"])
        bob.send(T.ENTER, b"fresh")  # three rooms exist: no fourth
        self.assertEqual(self.codes(bob), [b"TOO_MANY_ROOMS"])
        self.entered(bob, b"open")  # an existing room is no new room

    def test_rate_limit_is_one_bucket_across_rooms(self) -> None:
        self.server = Server(rate_limit=1.0, rate_burst=2)
        ann = self.speaker(b"ann")
        self.entered(ann, b"a")  # one token
        ann.send(T.ROOM_SAY, b"a.hi")  # two
        ann.send(T.SAY, b"hi")  # none left
        self.assertEqual(ann.types(), [T.ROOM_MESSAGE, T.ERROR])


class RoomEventCodecTests(ChatTestCase):
    """Room events cross the links between processes (workers, Redis)."""

    def test_round_trip(self) -> None:
        from chatd.core.roomevents import (
            RoomJoin,
            RoomLeave,
            RoomLock,
            RoomMessage,
            RoomTopic,
        )
        from chatd.core.roster import User
        from chatd.wire import LeaveReason
        from chatd.wire.eventcodec import (
            BadEvent,
            decodeBatch,
            decodeEvent,
            encodeBatch,
        )

        ann = User(7, 33, b"ann")
        events = [
            RoomJoin(b"Dev", ann),
            RoomMessage(b"Dev", ann, b"a.b"),
            RoomTopic(b"Dev", b"ship. it"),
            RoomLeave(b"Dev", ann, LeaveReason.PART),
            RoomLock(b"Dev", True),
        ]
        back = decodeBatch(encodeBatch(events))
        self.assertEqual([type(e) for e in back], [type(e) for e in events])
        self.assertEqual(
            [(e.room, frameOf(e)) for e in back], [(e.room, frameOf(e)) for e in events]
        )
        self.assertEqual(back[0].user.entry, ann.entry)  # type: ignore[attr-defined]
        self.assertEqual(back[2].topic, b"ship. it")  # type: ignore[attr-defined]
        self.assertEqual(back[3].reason, LeaveReason.PART)  # type: ignore[attr-defined]
        self.assertEqual((back[4].room, back[4].locked), (b"Dev", True))  # type: ignore[attr-defined]
        self.assertRaises(BadEvent, decodeEvent, b"\x09" + b"\0" * 14)  # no room


class SnapshotTests(ChatTestCase):
    """A process that starts later (a new worker) is told the rooms."""

    def test_snapshot_rebuilds_the_directory(self) -> None:
        from chatd.core.roomcast import RoomCast

        server = Server(rooms=(("news", "daily"), ("open", "")))
        ann = server.active(b"ann")
        bob = server.active(b"bob")
        for peer, rooms in ((ann, (b"dev", b"open")), (bob, (b"DEV",))):
            peer.send(T.VERSION, b"1.2")
            for room in rooms:
                peer.send(T.ENTER, room)
        ann.send(T.TOPIC, b"open.anyone")
        ann.send(T.TOPIC, b"dev.ship it")
        ann.received()
        hub = server.factory.hub
        late = RoomCast(lambda *a: None, 1 << 20, configured=[(b"news", b"daily", True),
                                                              (b"open", b"", False)])  # fmt: skip
        for event in hub.rooms.snapshot():
            late.deliver(event)
        self.assertEqual(late.directory.listing(), hub.rooms.directory.listing())
        self.assertEqual(
            [u.entry for u in late.members(b"dev")], [ann.entry, bob.entry]
        )
