"""The session engine behind its seams: a roster and a sequencer that answer
later or fail, flow control on a transport that is not a TCP socket, and the
rules that must not silently go (error-log summary, burst cap, kick)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface import implementer, implementer_only
from zope.interface.verify import verifyObject

from chatd.core.events import Event
from chatd.core.limits import TokenBucket
from chatd.core.roster import IRoster, Roster, User
from chatd.core.sequencer import ISequencer, LocalSequencer
from chatd.core.session import IConnection
from chatd.wire import encode
from chatd.wire.eventframes import frameOf
from tests.memory import ChatTestCase, Server, T


@implementer(IRoster)
class LaterRoster:
    """A roster that answers when the test says (a remote one, say)."""

    def __init__(self) -> None:
        self.local = Roster()
        self.waiting: list[tuple[bytes, Deferred]] = []

    def claim(self, name: bytes) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((name, d))
        return d

    def answer(self) -> None:
        name, d = self.waiting.pop(0)
        self.local.claim(name).chainDeferred(d)

    def release(self, user: User) -> None:
        self.local.release(user)


def chained(inner: Deferred) -> Deferred:
    """A Deferred that is "called" but waits on ``inner``, as txredisapi's
    calls are (a connection first, then the reply): ``called`` is True and
    ``paused`` until ``inner`` fires."""
    return succeed(None).addCallback(lambda _: inner)


@implementer(IRoster)
class ChainedRoster(LaterRoster):
    """A remote roster whose Deferreds look called before they answer."""

    def claim(self, name: bytes) -> Deferred:
        return chained(LaterRoster.claim(self, name))


@implementer(ISequencer)
@implementer_only(ISequencer)
class FlakySequencer(LocalSequencer):
    """A sequencer whose backend can be unreachable (so not one that always
    answers at once: no ISynchronousSequencer)."""

    down = False

    def submit(self, event: Event) -> Deferred:
        if self.down:
            return fail(ConnectionError("backend unreachable"))
        return LocalSequencer.submit(self, event)


class RemoteRosterTests(ChatTestCase):
    def test_pipelined_handshake_waits_for_the_roster(self) -> None:
        """HELLO+READY+SAY in one read: the frames after HELLO wait until
        the roster answers, then run in order (WELCOME, JOIN, MESSAGE)."""
        roster = LaterRoster()
        server = Server(roster=roster)
        alice = server.connect()
        alice.sendRaw(
            encode(T.HELLO, b"alice") + encode(T.READY) + encode(T.SAY, b"hi")
        )
        self.assertEqual(alice.received(), [])
        roster.answer()
        server.clock.advance(0)
        frames = alice.received()
        self.assertEqual([t for t, _ in frames], [T.WELCOME, T.JOIN, T.MESSAGE])
        self.assertTrue(frames[2][1].endswith(b".hi"))

    def test_pipelined_handshake_waits_for_a_chained_answer(self) -> None:
        """The --redis case (issue 18): the roster's Deferred is already
        "called" with another Deferred; HELLO+READY+SAY+WHO still get
        WELCOME, JOIN, MESSAGE, USERS, not BAD_STATE and NOT_READY."""
        roster = ChainedRoster()
        server = Server(roster=roster)
        alice = server.connect()
        alice.sendRaw(
            encode(T.HELLO, b"alice")
            + encode(T.READY)
            + encode(T.SAY, b"hi")
            + encode(T.WHO)
        )
        self.assertEqual(alice.received(), [])
        roster.answer()
        server.clock.advance(0)
        self.assertEqual(
            alice.types(), [T.WELCOME, T.JOIN, T.MESSAGE, T.USERS, T.USERS]
        )

    def test_closed_while_waiting_frees_the_name(self) -> None:
        roster = LaterRoster()
        server = Server(roster=roster)
        alice = server.connect()
        alice.send(T.HELLO, b"alice")
        alice.lose()
        roster.answer()
        self.assertEqual(roster.local.named, 0)

    def test_roster_unreachable(self) -> None:
        """HELLO gets UNAVAILABLE and the connection stays in CONNECTED."""
        roster = LaterRoster()
        server = Server(roster=roster)
        alice = server.connect()
        alice.send(T.HELLO, b"alice")
        roster.waiting.pop(0)[1].errback(ConnectionError("down"))
        self.assertOnlyError(alice, "UNAVAILABLE")
        alice.send(T.HELLO, b"alice")
        roster.answer()
        server.clock.advance(0)
        self.assertEqual(alice.types(), [T.WELCOME])


class UnavailableTests(ChatTestCase):
    def test_say_and_whisper_while_the_sequencer_is_down(self) -> None:
        sequencer = FlakySequencer()
        server = Server(sequencer=sequencer)
        alice, bob = server.users(b"alice", b"bob")
        sequencer.down = True
        alice.send(T.SAY, b"lost?")
        self.assertOnlyError(alice, "UNAVAILABLE")
        alice.send(T.WHISPER, b"bob.psst")
        self.assertOnlyError(alice, "UNAVAILABLE")
        self.assertEqual(bob.received(), [])
        sequencer.down = False
        alice.send(T.SAY, b"back")
        self.assertEqual([p for _, p in bob.received()], [alice.prefix + b"back"])


class FlowControlledTransportTests(ChatTestCase):
    """Any transport that pauses its producer gets a slow reader cut off: the
    backlog is counted by the front end, not read from a TCP socket."""

    config = {"max_backlog": 70_000}

    def test_non_tcp_transport_cut_off(self) -> None:
        slow, talker, other = self.server.users(b"slow", b"talker", b"other")
        verifyObject(IConnection, slow.proto)
        # A StringTransport is no TCP socket; it says it is full as any
        # flow-controlled transport (TLS, a WebSocket) would.
        slow.proto.pauseProducing()
        self.assertGreaterEqual(slow.proto.backlog(), 64 * 1024)
        for _ in range(12):
            talker.send(T.SAY, b"z" * 500)
            self.server.clock.advance(0)
        self.assertOnlyError(slow, "SLOW_CONSUMER", fatal=True)
        self.assertIn((T.LEAVE, slow.prefix + b"slow"), other.received())

    def test_drained_transport_holds_nothing(self) -> None:
        (slow,) = self.server.users(b"slow")
        slow.proto.pauseProducing()
        slow.proto.resumeProducing()
        self.assertEqual(slow.proto.backlog(), 0)


class RuleTests(ChatTestCase):
    def test_error_log_summarised_after_five(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        alice = self.server.connect()
        for _ in range(8):
            alice.send(T.SAY, b"too early")
        alice.lose()
        texts = [e["log_format"] for e in logged if e.get("log_namespace") == "chatd"]
        self.assertEqual(sum(t.startswith("error conn=") for t in texts), 5)
        summary = [e for e in logged if e["log_format"].startswith("errors conn=")]
        self.assertEqual((summary[0]["n"], summary[0]["m"]), (8, 3))

    def test_rate_burst_is_a_cap(self) -> None:
        """Saving up while idle never buys more than the burst."""
        now = [0.0]
        bucket = TokenBucket(10, 3, lambda: now[0])
        now[0] = 1000.0
        self.assertEqual([bucket.take() for _ in range(5)], [True] * 3 + [False] * 2)

    def test_kick_is_case_insensitive(self) -> None:
        alice, bob = self.server.users(b"Alice", b"bob")
        self.assertTrue(self.server.factory.kick("aLiCe"))
        self.assertOnlyError(alice, "KICKED", fatal=True)
        self.assertIn((T.LEAVE, alice.prefix + b"kicked"), bob.received())
        self.assertFalse(self.server.factory.kick("alice"))

    def test_every_connection_gets_a_close_line(self) -> None:
        """Also one that never said HELLO, with why it ended."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        quiet = self.server.connect()
        quiet.lose()
        bad = self.server.connect()
        bad.sendRaw(b"\0\0\0\1\0\0\x10\0")  # a header announcing 4096 bytes
        bad.lose()
        closes = [e for e in logged if e["log_format"].startswith("close conn=")]
        self.assertEqual(
            [(e["conn"], e["why"]) for e in closes],
            [
                (quiet.proto.number, "client closed"),
                (bad.proto.number, "FRAME_TOO_LARGE"),
            ],
        )


class EventCodecTests(ChatTestCase):
    def test_round_trip_every_kind(self) -> None:
        from chatd.core.events import (
            Join,
            Kick,
            Leave,
            Message,
            Messages,
            Notice,
            Whisper,
        )
        from chatd.wire import LeaveReason
        from chatd.wire.eventcodec import decodeBatch, encodeBatch

        alice, bob = User(1, 33, b"alice"), User(2, 160, b"Bob")
        events = [
            Join(alice),
            Message(alice, b"hi"),
            Messages(frameOf(Message(bob, b"a")) + frameOf(Message(bob, b"b")), 2),
            Whisper(alice, bob, b"psst"),
            Kick(bob),
            Notice("MAINTENANCE", "soon"),
            Leave(alice, LeaveReason.SLOW),
        ]
        for seq, event in enumerate(events, 1):
            event.seq = seq
        back = decodeBatch(encodeBatch(events))
        self.assertEqual([type(e) for e in back], [type(e) for e in events])
        self.assertEqual(
            [(e.seq, frameOf(e), e.count) for e in back],
            [(e.seq, frameOf(e), e.count) for e in events],
        )
        self.assertEqual(back[0].user.entry, alice.entry)
        self.assertEqual(back[3].target.entry, bob.entry)
        self.assertEqual(back[6].reason, LeaveReason.SLOW)

    def test_bad_bytes_raise_bad_event(self) -> None:
        from chatd.wire.eventcodec import BadEvent, decodeBatch, decodeEvent

        for data in (b"", b"\x63" + b"\0" * 14, b"\x07" + b"\0" * 14):
            self.assertRaises(BadEvent, decodeEvent, data)
        self.assertRaises(BadEvent, decodeBatch, b"\0\0\0\x09abc")


@implementer_only(ISequencer)  # answers later: not an ISynchronousSequencer
class LaterSequencer(LocalSequencer):
    """A sequencer that numbers events when the test says (a remote one)."""

    def __init__(self) -> None:
        LocalSequencer.__init__(self)
        self.waiting: list[tuple[Event, Deferred]] = []
        self.later = False

    def submit(self, event: Event) -> Deferred:
        if not self.later:
            return LocalSequencer.submit(self, event)
        d: Deferred = Deferred()
        self.waiting.append((event, d))
        return d

    def answer(self) -> None:
        event, d = self.waiting.pop(0)
        LocalSequencer.submit(self, event).chainDeferred(d)


@implementer(ISequencer)
class ChainedSequencer(LaterSequencer):
    """A remote sequencer whose Deferreds look called before they answer."""

    def submit(self, event: Event) -> Deferred:
        d = LaterSequencer.submit(self, event)
        return chained(d) if self.later else d


class RemoteSequencerOrderTests(ChatTestCase):
    def test_replies_wait_for_a_chained_answer(self) -> None:
        """SAY then ECHO with a Deferred that is "called" but waiting: the
        ECHO still waits for the MESSAGE."""
        sequencer = ChainedSequencer()
        server = Server(sequencer=sequencer)
        (alice,) = server.users(b"alice")
        sequencer.later = True
        alice.sendRaw(encode(T.SAY, b"first") + encode(T.ECHO, b"then"))
        self.assertEqual(alice.received(), [])
        sequencer.answer()
        server.clock.advance(0)
        self.assertEqual(alice.types(), [T.MESSAGE, T.ECHO])

    def test_replies_wait_for_the_senders_own_message(self) -> None:
        """SAY then ECHO in one read: the ECHO comes after the MESSAGE, as
        with a local sequencer, however late the sequencer answers."""
        sequencer = LaterSequencer()
        server = Server(sequencer=sequencer)
        alice, bob = server.users(b"alice", b"bob")
        sequencer.later = True
        alice.sendRaw(encode(T.SAY, b"first") + encode(T.ECHO, b"then"))
        self.assertEqual(alice.received(), [])
        sequencer.answer()
        server.clock.advance(0)
        self.assertEqual(alice.types(), [T.MESSAGE, T.ECHO])
        self.assertEqual(bob.types(), [T.MESSAGE])

    def test_failed_submit_then_later_replies_in_order(self) -> None:
        sequencer = LaterSequencer()
        server = Server(sequencer=sequencer)
        (alice,) = server.users(b"alice")
        sequencer.later = True
        alice.sendRaw(encode(T.SAY, b"lost") + encode(T.PING, b"p"))
        sequencer.waiting.pop(0)[1].errback(ConnectionError("down"))
        server.clock.advance(0)
        frames = alice.received()
        self.assertEqual([t for t, _ in frames], [T.ERROR, T.PONG])
        self.assertTrue(frames[0][1].startswith(b"UNAVAILABLE."))


class StatusBacklogTests(ChatTestCase):
    def test_backlog_bytes_in_status(self) -> None:
        """/status shows what a user's front end holds for it: 0 while it
        reads, the counted backlog once its transport is full."""
        from twisted.internet import address
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from chatd.server.admin import status
        from chatd.server.config import Config
        from chatd.server.service import ChatService

        service = ChatService(
            Config(stats_interval=0), MemoryReactorClock(), handleSignals=False
        )
        peer = address.IPv4Address("TCP", "127.0.0.1", 40000)
        proto = service.factory.buildProtocol(peer)
        proto.makeConnection(StringTransport(peerAddress=peer))
        proto.dataReceived(encode(T.HELLO, b"alice") + encode(T.READY))
        [user] = status(service)["users"]
        self.assertEqual((user["name"], user["backlog_bytes"]), ("alice", 0))
        proto.pauseProducing()  # its transport is full
        proto.dataReceived(encode(T.ECHO, b"x" * 1000))
        [user] = status(service)["users"]
        # The 64 KiB it held, then the ECHO (and the JOIN still owed it).
        self.assertGreaterEqual(user["backlog_bytes"], 64 * 1024 + 1008)
