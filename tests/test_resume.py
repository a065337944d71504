"""History and resume (docs/protocol.md, "History and resume"), in memory:
numbers, tokens, the window, the replay, HISTORY, and which error wins."""

from __future__ import annotations

from chatd.core.events import Message
from chatd.core.history import History, number, split
from chatd.core.roster import User
from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.memory import ChatTestCase, Peer


class ResumeTests(ChatTestCase):
    config = {"resume_window": 60.0, "history": 100, "idle_timeout": 0.0}

    def speaker(self, name: bytes, resumable: bool = True) -> tuple[Peer, bytes]:
        """An ACTIVE 1.2 user (numbered if ``resumable``) and its token."""
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        token = b""
        if resumable:
            peer.send(T.RESUMABLE)
        peer.send(T.HELLO, name)
        frames = peer.received()
        if resumable:
            self.assertEqual(frames[:2], [(T.VERSION, b"1.2"), (T.RESUMABLE, b"60")])
            self.assertEqual(frames[2][0], T.WELCOME)
            self.assertEqual(frames[3][0], T.TOKEN)
            token = frames[3][1]
            self.assertRegex(token.decode(), r"\A[A-Za-z0-9_-]{32}\Z")
        peer.send(T.READY)
        frames = peer.received()
        if resumable:
            self.assertEqual([t for t, _ in frames[:2]], [T.MARK, T.JOIN], frames)
            peer.entry = frames[1][1]
        else:
            peer.entry = frames[0][1]
        return peer, token

    def resume(self, token: bytes, since: dict[bytes, int]) -> tuple[Peer, list]:
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, token)
        for room, seen in since.items():
            peer.send(T.SINCE, b"%s.%d" % (room, seen))
        peer.send(T.READY)
        return peer, peer.received()

    def marks(self, frames: list) -> list[int]:
        return [int(p.rsplit(b".", 1)[1]) for t, p in frames if t == T.MARK]

    def test_numbers_only_for_who_asked(self) -> None:
        alice, _ = self.speaker(b"alice")
        plain, _ = self.speaker(b"plain", resumable=False)
        old = self.server.active(b"old")
        for ftype in range(30, 36):
            old.send(ftype, b"lobby.1")
        self.assertEqual(
            [p.split(b".")[0] for _, p in old.received()], [b"UNKNOWN_TYPE"] * 6
        )
        alice.received()
        plain.received()
        plain.send(T.SAY, b"hi")
        got = alice.received()
        self.assertEqual([t for t, _ in got], [T.MARK, T.MESSAGE])
        self.assertEqual(plain.types(), [T.MESSAGE])
        self.assertEqual(old.types(), [T.MESSAGE])
        value = self.marks(got)[0]
        self.assertEqual(got[0][1], b"lobby.%d" % value)
        self.assertEqual(split(value)[1], 0)

    def test_a_run_of_says_gets_one_number_per_frame(self) -> None:
        alice, _ = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        alice.received()
        bob.sendRaw(b"".join(encode(T.SAY, b"m%d" % i) for i in range(3)))
        got = alice.received()
        self.assertEqual([t for t, _ in got], [T.MARK, T.MESSAGE] * 3)
        values = self.marks(got)
        self.assertEqual(values, sorted(set(values)))

    def test_resumable_after_hello_is_bad_state(self) -> None:
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.HELLO, b"x")
        peer.received()
        peer.send(T.RESUMABLE)
        self.assertOnlyError(peer, "BAD_STATE")

    def test_drop_then_resume_gets_what_was_missed(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        last = self.marks(alice.received())[-1]  # bob's JOIN
        alice.lose()
        for text in (b"one", b"two", b"three"):
            bob.send(T.SAY, text)
        bob.send(T.WHO)
        got = bob.received()
        self.assertNotIn(T.LEAVE, [t for t, _ in got])  # detached, not gone
        self.assertIn(b"alice", b"".join(p for t, p in got if t == T.USERS))
        report = self.server.factory.hub.resumeReport()
        self.assertEqual(  # alice's token lives on, bob has none
            (report["detached"], report["window"], report["tokens"]),  # type: ignore[index]
            (1, 60.0, 1),
        )
        bob.send(T.HELLO, b"alice")  # the name is still held
        self.assertEqual([t for t, _ in bob.received()], [T.ERROR])
        again, frames = self.resume(token, {b"lobby": last})
        self.assertEqual(frames[1][0], T.WELCOME)
        self.assertEqual(frames[1][1].split(b".")[0], b"alice")
        self.assertEqual(frames[2][0], T.TOKEN)
        self.assertNotEqual(frames[2][1], token)
        replay = frames[3:]
        self.assertEqual(
            [p for t, p in replay if t == T.MESSAGE],
            [bob.prefix + t for t in (b"one", b"two", b"three")],
        )
        self.assertEqual([t for t, _ in replay], [T.MARK, T.MESSAGE] * 3)
        self.assertTrue(all(v > last for v in self.marks(replay)))
        self.assertEqual(bob.received(), [])  # no JOIN, no LEAVE
        bob.send(T.SAY, b"live")
        self.assertEqual(again.received()[1], (T.MESSAGE, bob.prefix + b"live"))
        # The spent token resumes nothing; the connection may go on.
        spent = self.server.connect()
        spent.send(T.VERSION, b"1.2")
        spent.received()
        spent.send(T.RESUME, token)
        self.assertOnlyError(spent, "BAD_TOKEN")
        spent.send(T.HELLO, b"carol")
        self.assertEqual(spent.types(), [T.WELCOME])

    def test_forged_and_malformed_tokens(self) -> None:
        self.speaker(b"alice")
        for forged in (b"A" * 32, b"", b"../etc", b"x" * 65):
            peer = self.server.connect()
            peer.send(T.VERSION, b"1.2")
            peer.received()
            peer.send(T.RESUME, forged)
            self.assertOnlyError(peer, "BAD_TOKEN")

    def test_a_client_that_closes_its_side_is_kept_too(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.received()
        alice.proto.readConnectionLost()  # its FIN: not a BYE
        self.assertTrue(alice.closing)
        alice.lose()
        self.assertEqual(bob.received(), [])  # no LEAVE
        self.assertEqual(len(self.server.factory.hub.detached), 1)
        _, frames = self.resume(token, {})
        self.assertEqual(frames[1][0], T.WELCOME)

    def test_the_window_ends_with_a_leave(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        alice.lose()
        self.server.clock.advance(59)
        self.assertEqual(bob.received(), [])
        self.server.clock.advance(1)
        self.assertEqual(bob.received(), [(T.LEAVE, alice.entry + b".error")])
        _, frames = self.resume(token, {})
        self.assertEqual(frames[1][0], T.ERROR)
        self.assertTrue(frames[1][1].startswith(b"BAD_TOKEN."))

    def test_bye_and_server_closes_are_not_kept(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.received()
        alice.send(T.BYE)
        alice.lose()
        self.assertEqual(bob.received(), [(T.LEAVE, alice.entry + b".quit")])
        _, frames = self.resume(token, {})
        self.assertTrue(frames[1][1].startswith(b"BAD_TOKEN."))

    def test_history_gone_names_the_first_held(self) -> None:
        self.server.factory.hub.rooms.history.limit = 3  # type: ignore[union-attr]
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        last = self.marks(alice.received())[-1]
        alice.lose()
        for i in range(5):
            bob.send(T.SAY, b"m%d" % i)
        _, frames = self.resume(token, {b"lobby": last})
        error = frames[3]
        self.assertEqual(error[0], T.ERROR)
        code, _, text = error[1].partition(b".")
        self.assertEqual(code, b"HISTORY_GONE")
        held = self.marks(frames[4:])
        self.assertEqual(len(held), 3)
        room, _, first = text.rpartition(b".")
        self.assertEqual((room, int(first)), (b"lobby", held[0]))
        self.assertEqual(
            [p for t, p in frames[4:] if t == T.MESSAGE],
            [bob.prefix + b"m%d" % i for i in (2, 3, 4)],
        )

    def test_takeover_of_a_connection_not_yet_seen_gone(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.received()
        alice.received()
        again, frames = self.resume(token, {})
        self.assertEqual(frames[1][0], T.WELCOME)
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received(), [])  # closed without a word
        alice.lose()
        bob.send(T.SAY, b"hi")
        self.assertEqual(bob.types(), [T.MESSAGE])  # no LEAVE, no JOIN
        self.assertEqual(again.received()[1], (T.MESSAGE, bob.prefix + b"hi"))

    def test_kick_ends_a_detached_user(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.received()
        alice.lose()
        self.assertTrue(self.server.factory.hub.kick("alice"))
        self.assertEqual(bob.received(), [(T.LEAVE, alice.entry + b".kicked")])
        _, frames = self.resume(token, {})
        self.assertTrue(frames[1][1].startswith(b"BAD_TOKEN."))
        self.assertEqual(self.server.factory.hub.detached, {})

    def resumedNotReady(self) -> tuple[Peer, Peer, Peer]:
        """alice dropped and resumed, not READY yet: (alice, bob, again)."""
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.received()
        alice.lose()
        again = self.server.connect()
        again.send(T.VERSION, b"1.2")
        again.send(T.RESUME, token)
        again.received()
        return alice, bob, again

    def test_kick_before_a_resumed_ready_ends_the_user(self) -> None:
        alice, bob, again = self.resumedNotReady()
        self.assertTrue(self.server.factory.hub.kick("alice"))
        self.assertTrue(again.received()[0][1].startswith(b"KICKED."))
        self.assertEqual(bob.received(), [(T.LEAVE, alice.entry + b".kicked")])

    def test_a_resumed_user_dropped_before_ready_leaves(self) -> None:
        alice, bob, again = self.resumedNotReady()
        again.lose()
        self.assertEqual(bob.received(), [(T.LEAVE, alice.entry + b".error")])
        bob.send(T.WHO)
        self.assertNotIn(b"alice", b"".join(p for _, p in bob.received()))

    def test_rooms_are_replayed_and_live_again(self) -> None:
        alice, token = self.speaker(b"alice")
        bob, _ = self.speaker(b"bob", resumable=False)
        bob.send(T.VERSION, b"1.2")
        for peer in (alice, bob):
            peer.send(T.ENTER, b"dev")
        got = alice.received()
        bob.received()
        last = self.marks(got)[-1]
        alice.lose()
        bob.send(T.ROOM_SAY, b"dev.missed")
        bob.send(T.SAY, b"lobby too")
        again, frames = self.resume(token, {b"dev": last})
        self.assertEqual(
            [(t, p) for t, p in frames if t == T.ROOM_MESSAGE],
            [(T.ROOM_MESSAGE, b"dev." + bob.prefix + b"missed")],
        )
        self.assertNotIn(T.MESSAGE, [t for t, _ in frames])  # no SINCE lobby
        bob.send(T.ROOM_SAY, b"dev.live")
        self.assertEqual(
            again.received()[1], (T.ROOM_MESSAGE, b"dev." + bob.prefix + b"live")
        )
        bob.received()

    def test_since_errors_in_order(self) -> None:
        _, token = self.speaker(b"alice")
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.SINCE, b"lobby.1")
        peer.received()
        peer.send(T.RESUME, token)
        peer.received()
        for payload, code in (
            (b"bad room!.1", "BAD_ROOM"),
            (b"lobby.x", "BAD_TEXT"),
            (b"lobby", "BAD_TEXT"),
            (b"nowhere.1", "NOT_IN_ROOM"),
        ):
            peer.send(T.SINCE, payload)
            self.assertOnlyError(peer, code)

    def test_history_request(self) -> None:
        alice, _ = self.speaker(b"alice", resumable=False)
        alice.send(T.VERSION, b"1.2")
        alice.send(T.ENTER, b"dev")
        for i in range(5):
            alice.send(T.ROOM_SAY, b"dev.m%d" % i)
        alice.received()
        alice.send(T.HISTORY, b"dev.2")
        got = alice.received()
        self.assertEqual(got[0], (T.HISTORY, b"dev.2"))
        self.assertEqual(
            [p for t, p in got if t == T.ROOM_MESSAGE],
            [b"dev." + alice.prefix + b"m3", b"dev." + alice.prefix + b"m4"],
        )
        before = self.marks(got)[0]
        alice.send(T.HISTORY, b"dev.1.%d" % before)
        got = alice.received()
        self.assertEqual(got[2], (T.ROOM_MESSAGE, b"dev." + alice.prefix + b"m2"))
        for payload, code in (
            (b"bad!.1", "BAD_ROOM"),
            (b"dev.0", "BAD_TEXT"),
            (b"dev.x", "BAD_TEXT"),
            (b"dev.1.", "BAD_TEXT"),
            (b"gone.1", "NO_SUCH_ROOM"),
        ):
            alice.send(T.HISTORY, payload)
            self.assertOnlyError(alice, code)


class HistoryTests(ChatTestCase):
    def test_bounded_in_count_and_bytes(self) -> None:
        user = User(1, 33, b"alice")
        kept = History(limit=10, maxBytes=500)
        for i in range(1, 10_001):
            event = Message(user, b"x" * 40)
            event.seq = i
            kept.record(b"room%d" % (i % 7), event)
        self.assertEqual(kept.rooms, 7)
        self.assertLessEqual(len(kept), 70)
        self.assertLessEqual(kept.heldBytes, 7 * 500)
        gone, held = kept.after(b"room1", number(1))
        self.assertIsNotNone(gone)
        self.assertEqual(gone, number(held[0][0].seq))

    def test_last_counts_frames_and_cuts_runs(self) -> None:
        from chatd.core.events import Messages

        kept = History()
        single = Message(User(1, 33, b"a"), b"x")
        single.seq = 1
        run = Messages(b"", 5)
        run.seq = 2
        for event in (single, run):
            kept.record(b"r", event)
        self.assertEqual(kept.last(b"r", 3), [(run, 2, 5)])
        self.assertEqual(kept.last(b"r", 7), [(single, 0, 1), (run, 0, 5)])
        self.assertEqual(kept.last(b"r", 2, number(2, 3)), [(run, 1, 3)])
        self.assertEqual(kept.last(b"r", 9, number(2)), [(single, 0, 1)])
        gone, held = kept.after(b"r", number(2, 1))
        self.assertEqual((gone, held), (None, [(run, 2)]))

    def test_a_resume_window_of_zero_gives_no_token(self) -> None:
        from tests.memory import Server

        self.server = Server(resume_window=0.0)
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUMABLE)
        peer.send(T.HELLO, b"a")
        self.assertEqual(
            [t for t, _ in peer.received()], [T.VERSION, T.RESUMABLE, T.WELCOME]
        )
