"""The rooms directory of protocol 1.2 (chatd.core.rooms), without sessions."""

from __future__ import annotations

from twisted.trial import unittest

from chatd.core.rooms import Directory, RoomError


class DirectoryTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.rooms = Directory(
            maxRooms=4, maxPerUser=3, configured=[(b"News", b"today", True)]
        )

    def refused(self, code: str, step, *args) -> str:  # type: ignore[no-untyped-def]
        with self.assertRaises(RoomError) as caught:
            step(*args)
        self.assertEqual(caught.exception.code, code)
        return caught.exception.text

    def test_first_spelling_kept_names_folded(self) -> None:
        room = self.rooms.enter("alice", b"Dev")
        self.assertIs(self.rooms.enter("bob", b"DEV"), room)
        self.assertEqual(room.name, b"Dev")
        self.assertEqual(list(room.members), ["alice", "bob"])

    def test_listing_in_creation_order_operator_rooms_first(self) -> None:
        self.rooms.enter("alice", b"dev")
        self.rooms.enter("bob", b"lobby")
        self.assertEqual(
            self.rooms.listing(),
            [(b"lobby", 1, b""), (b"News", 0, b"today"), (b"dev", 1, b"")],
        )

    def test_an_emptied_room_goes_unless_the_operator_named_it(self) -> None:
        self.rooms.enter("alice", b"dev")
        self.rooms.enter("alice", b"news")
        self.assertEqual(
            [r.name for r in self.rooms.leaveAll("alice")], [b"dev", b"News"]
        )
        self.assertIsNone(self.rooms.get(b"dev"))
        self.assertIsNotNone(self.rooms.get(b"news"))
        self.assertEqual(self.rooms.memberships, {})

    def test_which_error_wins(self) -> None:
        """Existence, then membership, then the limits."""
        self.refused("NO_SUCH_ROOM", self.rooms.part, "alice", b"nowhere")
        self.refused("NOT_IN_ROOM", self.rooms.part, "alice", b"news")
        self.refused("NOT_IN_ROOM", self.rooms.setTopic, "alice", b"news", b"x")
        self.rooms.enter("alice", b"news")
        self.refused("TOPIC_LOCKED", self.rooms.setTopic, "alice", b"news", b"x")
        self.refused("BAD_STATE", self.rooms.enter, "alice", b"NEWS")

    def test_limits(self) -> None:
        """The default room counts: every active user is in it, implicitly
        (its membership is 1.1's, the roster's replica)."""
        for name in (b"a", b"b"):
            self.rooms.enter("alice", name)
        text = self.refused("TOO_MANY_ROOMS", self.rooms.enter, "alice", b"c")
        self.assertIn("max-rooms-per-user", text)
        self.rooms.enter("bob", b"a")  # the limit is alice's, not bob's
        self.assertEqual(list(self.rooms.get(b"a").members), ["alice", "bob"])  # type: ignore[union-attr]

    def test_max_rooms_counts_rooms_not_entries(self) -> None:
        self.rooms.enter("alice", b"a")
        self.rooms.enter("bob", b"b")  # lobby, News, a, b: 4 rooms
        text = self.refused("TOO_MANY_ROOMS", self.rooms.enter, "carol", b"c")
        self.assertIn("max-rooms", text)
        self.rooms.enter("carol", b"A")  # an existing room is no new room
        self.rooms.part("bob", b"b")
        self.rooms.enter("carol", b"c")

    def test_topic_set_by_a_member(self) -> None:
        self.rooms.enter("alice", b"dev")
        self.assertEqual(
            self.rooms.setTopic("alice", b"DEV", b"ship it").topic, b"ship it"
        )
