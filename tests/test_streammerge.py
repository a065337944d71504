"""The pure parts of per-room streams (docs/cluster.md, "Per-room
streams"): merging one XREAD reply of several streams by number
(chatd.cluster.streammerge) and counting a node's members per room
(chatd.cluster.roomreads).  Tables of cases, no sockets."""

from __future__ import annotations

from twisted.trial import unittest

from chatd.cluster.roomreads import LocalRooms
from chatd.cluster.streammerge import MAIN, Entry, merge, parseReply, roomStream
from chatd.core.events import Event, Message
from chatd.core.roster import User
from chatd.wire.eventcodec import encodeBatch

U = User(1, 33, b"u")
RA, RB = roomStream(b"ra"), roomStream(b"rb")


def run(stream: bytes, first: int, n: int = 1) -> Entry:
    """An entry of ``n`` events numbered from ``first``."""
    events: list[Event] = [Message(U, b"x") for _ in range(n)]
    return Entry(stream, b"%d-0" % first, first, events)


def handOver(first: int) -> Entry:
    return Entry(MAIN, b"%d-9" % first, first, handOver=b"1 a", node=b"b")


def order(entries: list[Entry]) -> list[tuple[bytes, int]]:
    return [(e.stream, e.first) for e in entries]


class MergeTests(unittest.SynchronousTestCase):
    def test_merge_tables(self) -> None:
        # (name, reply by stream, COUNT, delivered now in order)
        cases: list[tuple[str, dict[bytes, list[Entry]], int, list[tuple[bytes, int]]]]
        cases = [
            ("one stream", {MAIN: [run(MAIN, 1), run(MAIN, 2)]}, 10,
             [(MAIN, 1), (MAIN, 2)]),
            ("interleaved by number",
             {MAIN: [run(MAIN, 1), run(MAIN, 4)], RA: [run(RA, 2, 2), run(RA, 5)]},
             10, [(MAIN, 1), (RA, 2), (MAIN, 4), (RA, 5)]),
            ("a cut stream holds back what lies above its last number",
             {MAIN: [run(MAIN, 1), run(MAIN, 3)], RA: [run(RA, 2), run(RA, 6)],
              RB: [run(RB, 4), run(RB, 5)]},
             2, [(MAIN, 1), (RA, 2), (MAIN, 3)]),
            ("a cut stream's own entries all go",
             {MAIN: [run(MAIN, 1), run(MAIN, 2)], RA: [run(RA, 7)]},
             2, [(MAIN, 1), (MAIN, 2)]),
            ("an entry of many events up to the cut goes whole",
             {MAIN: [run(MAIN, 1, 3)], RA: [run(RA, 4)]},
             1, [(MAIN, 1)]),
            ("the lowest of two cuts bounds",
             {MAIN: [run(MAIN, 1), run(MAIN, 9)], RA: [run(RA, 2), run(RA, 4)],
              RB: [run(RB, 3), run(RB, 5)]},
             2, [(MAIN, 1), (RA, 2), (RB, 3), (RA, 4)]),
            ("a hand-over goes before the number it precedes",
             {MAIN: [run(MAIN, 1), handOver(3)], RA: [run(RA, 2), run(RA, 3)]},
             10, [(MAIN, 1), (RA, 2), (MAIN, 3), (RA, 3)]),
            ("a hand-over right above a cut goes",
             {MAIN: [handOver(3)], RA: [run(RA, 1), run(RA, 2)]},
             2, [(RA, 1), (RA, 2), (MAIN, 3)]),
            ("nothing read", {}, 10, []),
        ]  # fmt: skip
        for name, reply, count, want in cases:
            got = order(merge(reply, count))
            self.assertEqual(got, want, name)
            # Held back entries come again: a stream never skips ahead.
            for stream, entries in reply.items():
                mine = [f for s, f in got if s == stream]
                self.assertEqual(mine, [e.first for e in entries[: len(mine)]], name)

    def test_reading_again_after_a_cut_gives_the_same_order(self) -> None:
        """What a cut held back comes with the next read, in its place."""
        streams = {
            MAIN: [run(MAIN, n) for n in (1, 4, 6, 9)],
            RA: [run(RA, n) for n in (2, 3, 7)],
            RB: [run(RB, n) for n in (5, 8, 10)],
        }
        delivered: list[int] = []
        cursors = dict.fromkeys(streams, 0)
        while len(delivered) < 10:
            reply = {s: e[cursors[s] : cursors[s] + 2] for s, e in streams.items()}
            reply = {s: e for s, e in reply.items() if e}
            for entry in merge(reply, 2):
                delivered.append(entry.first)
                cursors[entry.stream] += 1
        self.assertEqual(delivered, list(range(1, 11)))

    def test_a_stream_added_at_an_entry_is_read_from_its_cursor(self) -> None:
        """A local ROOM_JOIN of ra at 3 on the cluster's stream: the reader
        stops there, adds ra from the entry's cursor (its entries 1 and 2
        stay unread), and the next read, with ra, goes on in one order."""
        ra = [run(RA, 2), run(RA, 4), run(RA, 6)]
        main = [run(MAIN, 1), run(MAIN, 3), run(MAIN, 5)]
        first = merge({MAIN: main}, 10)
        self.assertEqual(order(first), [(MAIN, 1), (MAIN, 3), (MAIN, 5)])
        # Delivered: 1; stopped at 3 (the join).  Read again with ra after 2:
        again = merge({MAIN: main[1:], RA: ra[1:]}, 10)
        self.assertEqual(order(again), [(MAIN, 3), (RA, 4), (MAIN, 5), (RA, 6)])

    def test_parsing_a_reply(self) -> None:
        batch = encodeBatch([Message(U, b"a"), Message(U, b"b")])
        reply = [
            [b"chatd:stream", [[b"1-0", [b"s", b"4", b"p", b"1", b"n", b"a",
                                         b"b", batch, b"r", b"ra 0-0 rb 7-1"]]]],
            [b"chatd:roomstream:ra", [[b"2-0", [b"s", b"x"]],
                                      [b"3-0", [b"s", b"9", b"b", batch]]]],
        ]  # fmt: skip
        parsed = parseReply(reply, b"chatd:", {RA: 6})
        [entry] = parsed[MAIN]
        self.assertEqual((entry.first, entry.last, entry.prev), (4, 5, 1))
        self.assertEqual(entry.rooms, {b"ra": b"0-0", b"rb": b"7-1"})
        bad, good = parsed[RA]
        self.assertIsNotNone(bad.bad)
        self.assertEqual((bad.first, good.first, good.prev), (7, 9, None))
        self.assertEqual(order(merge(parsed, 10)), [(MAIN, 4), (RA, 7), (RA, 9)])


class LocalRoomsTests(unittest.SynchronousTestCase):
    def test_the_last_local_member_drops_the_room(self) -> None:
        rooms = LocalRooms()
        rooms.join(b"ra", 1)
        rooms.join(b"ra", 2)
        rooms.join(b"rb", 1)
        self.assertFalse(rooms.leave(b"ra", 1))
        self.assertFalse(rooms.leave(b"ra", 3))  # not a member here
        self.assertEqual(rooms.leaveAll(1), [b"rb"])
        self.assertIn(b"ra", rooms)
        self.assertTrue(rooms.leave(b"ra", 2))
        self.assertEqual((len(rooms), rooms.rooms()), (0, []))
        self.assertFalse(rooms.leave(b"ra", 2))
