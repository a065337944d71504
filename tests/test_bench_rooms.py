"""chatd-bench --rooms without sockets: the 1.2 setup of a user, ROOM_SAY,
one order per room, the stream ends per room, the per-room figures."""

from __future__ import annotations

import json
from collections import Counter

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from chatd.bench.checks import Histogram, roomParser, sayText
from chatd.bench.config import Config
from chatd.bench.conn import PACK
from chatd.bench.fanout import FanUser
from chatd.bench.figures import Counts, merge, partFigures, streamEnds
from chatd.bench.load import LoadPart
from chatd.bench.options import configFrom, parser
from chatd.bench.order import ORDER_CHECKPOINT, orderDisagreements, roomsOutOfOrder
from chatd.bench.report import header, summary
from chatd.wire import FrameType, encode, join_fields
from tests.test_bench_units import _transport

T = FrameType


def roomMessage(room: bytes, sender: int, seq: int) -> bytes:
    """A ROOM_MESSAGE as chatd sends it for ROOM_SAY ``room.`` + sayText."""
    return encode(T.ROOM_MESSAGE, room + b".1.3.bs0." + sayText(sender, seq, 0, 16))


class Setup:
    """A :class:`LoadPart` of ``rooms`` rooms on a memory reactor, and users."""

    def __init__(self, rooms: int, senders: int = 2, receivers: int = 4) -> None:
        self.part = LoadPart(
            MemoryReactorClock(),
            Config(mode="fanout", rooms=rooms, senders=senders, receivers=receivers),
        )

    def user(self, index: int) -> tuple[FanUser, bytes]:
        """User ``index``, connected: (user, its WELCOME's JOIN fields)."""
        sender = index if index < self.part.config.senders else None
        user = FanUser(self.part, index, sender)
        user.makeConnection(_transport())
        me = join_fields(index + 1, 3, user.name.encode())
        user.dataReceived(encode(T.WELCOME, join_fields(user.name, index + 1, 3)))
        return user, me

    def member(self, index: int) -> FanUser:
        """User ``index``, through the whole 1.2 setup into its room."""
        user, me = self.user(index)
        room = user.room.encode()
        user.dataReceived(
            encode(T.JOIN, me)
            + encode(T.VERSION, b"1.2")
            + encode(T.ROOM_JOIN, room + b"." + me)
        )
        assert user.active.called, user.name
        return user


class SetupTests(unittest.SynchronousTestCase):
    def test_without_rooms_the_bytes_of_1_1(self):
        """No --rooms: READY alone, ACTIVE at the own JOIN, plain SAYs."""
        user, me = Setup(0).user(0)
        transport = user.transport
        self.assertTrue(transport.value().endswith(encode(T.READY)))
        transport.clear()
        user.dataReceived(encode(T.JOIN, me))
        self.assertTrue(user.active.called)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(user.say()[:8], PACK(T.SAY, 64))

    def test_version_after_ready_then_enter_then_room_say(self):
        """User 5 of 3 rooms: VERSION 1.2 right after READY, ENTER r2 once
        ACTIVE and answered 1.2, set up at its own ROOM_JOIN (not another
        member's), then ROOM_SAY ``r2.`` + the usual text."""
        user, me = Setup(3, senders=6).user(5)
        transport = user.transport
        self.assertTrue(
            transport.value().endswith(encode(T.READY) + encode(T.VERSION, b"1.2"))
        )
        transport.clear()
        user.dataReceived(encode(T.JOIN, me))
        self.assertEqual(transport.value(), b"")  # VERSION not answered yet
        user.dataReceived(encode(T.VERSION, b"1.2"))
        self.assertEqual(transport.value(), encode(T.ENTER, b"r2"))
        other = join_fields(9, 1, b"someone")
        user.dataReceived(encode(T.ROOM_JOIN, b"r2." + other))
        self.assertFalse(user.active.called)
        user.dataReceived(encode(T.ROOM_JOIN, b"r2." + me))
        self.assertTrue(user.active.called)
        frame = user.say()
        text = b"r2." + sayText(5, 0, 0, 64)
        self.assertEqual(frame[:8], PACK(T.ROOM_SAY, len(text)))
        self.assertEqual(frame[8:].split(b".")[:3], [b"r2", b"5", b"0"])

    def test_a_1_1_server_refuses_the_version(self):
        user, _me = Setup(2).user(0)
        user.dataReceived(encode(T.ERROR, b"UNKNOWN_TYPE.unknown frame type 18"))
        failure = self.failureResultOf(user.active)
        self.assertIn("UNKNOWN_TYPE", str(failure.value))

    def test_room_parser(self):
        parse = roomParser(b"r1")
        self.assertEqual(parse(b"r1.1.3.bob." + sayText(4, 7, 9, 16)), (4, 7, 9))
        with self.assertRaises(ValueError):
            parse(b"r2.1.3.bob." + sayText(4, 7, 9, 16))

    def test_options_and_header(self):
        args = ["fanout", "h", "--senders", "2", "--receivers", "8", "--rooms", "5"]
        config = configFrom(parser().parse_args([*args, "--seed", "1"]))
        self.assertEqual(config.rooms, 5)
        self.assertEqual(
            header(config, 1),
            "chatd-bench fanout -> h:7777: 2 senders + 8 receivers in 5 rooms, "
            "64 B ROOM_SAYs, window 16, 5 s, seed 1",
        )
        self.assertEqual(configFrom(parser().parse_args(args[:2])).rooms, 0)


class RoomOrderTests(unittest.SynchronousTestCase):
    def test_one_order_per_room(self):
        """Rooms r0 and r1 (senders 0 and 1) each see their own stream: the
        members of r0 agree; in r1 one member got two messages swapped (one
        disagreement, one room out of order); r0 and r1 are never compared."""
        setup = Setup(2, senders=2, receivers=4)
        members = {index: setup.member(index) for index in range(6)}
        for index, user in members.items():
            room, sender = user.room.encode(), index % 2
            order = [roomMessage(room, sender, q) for q in range(ORDER_CHECKPOINT)]
            if index == 5:
                order[0], order[1] = order[1], order[0]
            user.dataReceived(b"".join(order))
        counts = setup.part.counts
        for user in members.values():
            user.collect(counts)
        self.assertEqual(counts.completed, 6 * ORDER_CHECKPOINT)
        self.assertEqual(counts.unexpected, 0)
        self.assertEqual(
            {k.partition(":")[0] for k in counts.orders},
            {"r0/500", "r0/end", "r1/500", "r1/end"},
        )
        orders = [dict(counts.orders)]
        self.assertEqual(orderDisagreements(orders), 2)  # at 500 and at the end
        self.assertEqual(roomsOutOfOrder(orders), 1)
        self.assertEqual(counts.rooms, Counter(r0=1500, r1=1500))

    def test_a_member_short_of_one_disagrees_at_the_end(self):
        setup = Setup(1, senders=1, receivers=1)
        users = [setup.member(0), setup.member(1)]
        for n, user in enumerate(users):
            user.dataReceived(b"".join(roomMessage(b"r0", 0, q) for q in range(3 - n)))
            user.collect(setup.part.counts)
        self.assertEqual(orderDisagreements([dict(setup.part.counts.orders)]), 1)

    def test_other_rooms_messages_are_unexpected(self):
        setup = Setup(2)
        user = setup.member(0)
        user.dataReceived(roomMessage(b"r1", 1, 0) + encode(T.MESSAGE, b"1.3.x.0.0.0."))
        self.assertEqual((setup.part.counts.unexpected, user.received), (2, 0))


class RoomFiguresTests(unittest.SynchronousTestCase):
    def test_stream_ends_per_room(self):
        """3 rooms, senders 0 and 1: room r2's member expects no one, r1's
        only sender 1; a member of r0 that missed sender 0's tail is a gap."""
        sent, lastSeen = streamEnds(
            [
                (0, 5, {0: 4}, 0),
                (1, 3, {1: 2}, 1),
                (None, 0, {}, 2),
                (None, 0, {0: 2}, 0),
            ],
            2,
            3,
        )
        self.assertEqual(sent, {0: 5, 1: 3})
        self.assertEqual(lastSeen, {0: Counter({4: 1, 2: 1}), 1: Counter({2: 1})})

    def test_per_room_figures_and_summary(self):
        """4 rooms, 2 senders, 7 users over two parts: members, senders and
        deliveries/s per room, and the summary line that says them."""
        config = Config(mode="fanout", rooms=4, senders=2, receivers=5, seed=1)
        parts = []
        for rooms in ({"r0": 300, "r1": 100}, {"r0": 100, "r1": 100}):
            counts = Counts(completed=sum(rooms.values()), bytes=1000, sent=100)
            counts.rooms.update(rooms)
            figures = partFigures(counts, Histogram({100: 1}), {}, {})
            parts.append(json.loads(json.dumps(figures)))
        out = merge(config, parts, 2.0)
        self.assertEqual((out["rooms"], out["rooms_out_of_order"]), (4, 0))
        self.assertEqual(out["parameters"]["rooms"], 4)
        self.assertEqual(
            out["per_room"],
            {
                "users": {"min": 1, "mean": 1.8, "max": 2},
                "senders": {"min": 0, "mean": 0.5, "max": 1},
                "deliveries_per_s": {"min": 0.0, "mean": 75.0, "max": 200.0},
            },
        )
        self.assertIn(
            "\n  4 rooms: 1-2 users, 0-1 senders and 75 deliveries/s per room "
            "(min 0, max 200); 0 out of order\n",
            summary(out),
        )

    def test_no_rooms_no_room_figures(self):
        config = Config(mode="fanout", senders=1, receivers=1)
        part = json.loads(
            json.dumps(partFigures(Counts(completed=1), Histogram(), {}, {}))
        )
        out = merge(config, [part], 1.0)
        self.assertNotIn("rooms", out)
        self.assertNotIn("rooms", out["parameters"])
        self.assertNotIn("rooms", summary(out))
