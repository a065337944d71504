"""chatd-client's history and resume (protocol 1.2, docs/protocol.md).

The Session runs on a Clock and in-memory transports (the harness of
tests/test_client_session.py) with ``resume=True``, as the CLI makes it on
a terminal; one end-to-end test runs the real client code against a real
daemon and cuts its connection.
"""

from __future__ import annotations

import io

from twisted.internet import defer, error, reactor
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase

from chatd.client.connection import connector
from chatd.client.console import Console
from chatd.client.resume import REPLAYED, Seen, parse_mark
from chatd.client.roomchat import NO_ROOMS
from chatd.client.session import Session
from chatd.wire import FrameType as T
from tests.daemon import Daemon, connect
from tests.test_client_session import SessionHarness

TOKEN = b"k2Vq-secret_1"
UNKNOWN = b"UNKNOWN_TYPE.type 18 not accepted from clients"


class Harness(SessionHarness):
    """A resuming terminal Session; ``refuse`` makes the next dials fail."""

    def __init__(self, interactive: bool = True, **kw) -> None:
        super().__init__(interactive=interactive, resume=True, **kw)
        self.refuse = False

    def connect(self, factory) -> defer.Deferred:
        if self.refuse:
            self.wires.append(StringTransport())  # counts the attempt
            return defer.fail(error.ConnectionRefusedError())
        return super().connect(factory)

    def marked(self, room: bytes, number: int, ftype: int, payload: bytes) -> None:
        self.receive(T.MARK, b"%s.%d" % (room, number))
        self.receive(ftype, payload)

    def login(self, window: bytes = b"60", token: bytes | None = TOKEN) -> None:
        """Start; the 1.2 handshake up to our own (numbered) JOIN."""
        self.session.start()
        assert self.sent() == [(T.VERSION, b"1.2")]
        self.receive(T.VERSION, b"1.2")
        assert self.sent() == [(T.RESUMABLE, b""), (T.HELLO, b"me")]
        self.receive(T.RESUMABLE, window)
        self.receive(T.WELCOME, b"me.1.33")
        if token is not None:
            self.receive(T.TOKEN, token)
        assert self.sent() == [(T.READY, b"")]
        self.marked(b"lobby", 10, T.JOIN, b"1.33.me")

    def enter(self, room: bytes, number: int) -> None:
        """/join ``room``: ENTER, our ROOM_JOIN, HISTORY asked (answer left to the test)."""
        self.console.dataReceived(b"/join " + room + b"\r")
        assert self.sent() == [(T.ENTER, room)]
        self.marked(room, number, T.ROOM_JOIN, room + b".1.33.me")
        assert self.sent() == [(T.HISTORY, room + b".20")]

    def redial(self) -> None:
        """Drop the connection and let the first retry dial."""
        self.close()
        self.clock.advance(0.5)

    def text(self) -> str:
        return self.shown() + self.errors.getvalue()


class MarkTests(SynchronousTestCase):
    def test_parse_mark(self):
        self.assertEqual(parse_mark(b"lobby.196608"), ("lobby", 196608))
        for bad in (
            b"lobby",
            b"lobby.",
            b".5",
            b"lobby.x",
            b"lobby.-1",
            b"a." + b"9" * 21,
        ):
            self.assertIsNone(parse_mark(bad), bad)

    def test_seen_is_bounded(self):
        seen = Seen()
        self.assertTrue(seen.add(1))
        self.assertFalse(seen.add(1))
        for n in range(2, 3000):
            seen.add(n)
        self.assertLessEqual(len(seen.numbers), 1000)
        self.assertFalse(seen.add(2999))


class ResumeTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()
        self.h.login()
        self.h.shown()

    def test_token_is_never_shown(self):
        h = self.h
        h.redial()
        h.receive(T.ERROR, b"BAD_TOKEN.that token resumes nothing")
        self.assertNotIn(TOKEN.decode(), h.text())
        self.assertNotIn(TOKEN, h.screen.value())

    def test_drop_resumes_with_since_and_counts_what_was_missed(self):
        h = self.h
        h.enter(b"dev", 20)
        h.receive(T.HISTORY, b"dev.0")
        h.marked(b"lobby", 30, T.MESSAGE, b"2.40.bob.before")
        h.close()
        self.assertIn("reconnecting in 0.5 s", h.text())
        self.assertEqual(len(h.wires), 1)
        h.clock.advance(0.5)
        self.assertEqual(h.sent(), [(T.VERSION, b"1.2")])
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(h.sent(), [(T.RESUME, TOKEN)])
        h.receive(T.WELCOME, b"me.1.33")
        h.receive(T.TOKEN, b"second")
        self.assertEqual(
            h.sent(),
            [
                (T.SINCE, b"lobby.30"),
                (T.SINCE, b"dev.20"),
                (T.READY, b""),
                (T.PING, REPLAYED),
            ],
        )
        h.marked(b"lobby", 30, T.MESSAGE, b"2.40.bob.before")  # a repeat: dropped
        h.marked(b"lobby", 40, T.MESSAGE, b"2.40.bob.missed one")
        h.marked(b"dev", 45, T.ROOM_JOIN, b"dev.2.40.bob")
        h.marked(b"dev", 50, T.ROOM_MESSAGE, b"dev.2.40.bob.missed two")
        h.receive(T.PONG, REPLAYED)
        h.marked(b"dev", 60, T.ROOM_MESSAGE, b"dev.2.40.bob.live")
        shown = h.text()
        self.assertNotIn("before", shown)  # the repeat is not shown again
        lines = [
            "bob: missed one",
            "[dev] * bob joined",
            "[dev] bob: missed two",
            "! reconnected, 2 missed messages delivered",
            "[dev] bob: live",
        ]
        at = [shown.find(line) for line in lines]
        self.assertNotIn(-1, at, shown)
        self.assertEqual(at, sorted(at))
        self.assertEqual(h.console.editor.prompt, "[dev]> ")  # still in dev
        self.assertEqual(h.sent(), [])  # no ENTER: we never left
        # The next drop resumes with the new token.
        h.redial()
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(h.sent(), [(T.VERSION, b"1.2"), (T.RESUME, b"second")])

    def test_lines_typed_while_away_go_after_the_resume(self):
        h = self.h
        h.close()
        h.console.dataReceived(b"still here\r")
        h.clock.advance(0.5)
        h.receive(T.VERSION, b"1.2")
        h.receive(T.WELCOME, b"me.1.33")
        self.assertEqual(
            h.sent()[-3:],
            [(T.READY, b""), (T.PING, REPLAYED), (T.SAY, b"still here")],
        )

    def test_bad_token_falls_back_to_a_fresh_hello(self):
        h = self.h
        h.enter(b"dev", 20)
        h.receive(T.HISTORY, b"dev.0")
        h.redial()
        h.receive(T.VERSION, b"1.2")
        h.sent()
        h.receive(T.ERROR, b"BAD_TOKEN.that token resumes nothing")
        self.assertEqual(h.sent(), [(T.RESUMABLE, b""), (T.HELLO, b"me")])
        self.assertIn("could not be resumed (BAD_TOKEN): joining as me again", h.text())
        h.receive(T.RESUMABLE, b"60")
        h.receive(T.WELCOME, b"me.7.33")
        h.receive(T.TOKEN, b"fresh")
        self.assertEqual(h.sent(), [(T.READY, b""), (T.ENTER, b"dev")])  # rooms again
        self.assertNotIn("[BAD_TOKEN]", h.text())

    def test_history_gone_is_said_once_per_room(self):
        h = self.h
        h.redial()
        h.receive(T.VERSION, b"1.2")
        h.receive(T.WELCOME, b"me.1.33")
        h.receive(T.ERROR, b"HISTORY_GONE.lobby.500")
        h.receive(T.ERROR, b"HISTORY_GONE.lobby.500")
        h.marked(b"lobby", 500, T.MESSAGE, b"2.40.bob.kept")
        h.receive(T.PONG, REPLAYED)
        shown = h.text()
        self.assertEqual(shown.count("some messages were lost in lobby"), 1)
        self.assertNotIn("[HISTORY_GONE]", shown)
        self.assertIn("reconnected, 1 missed message delivered", shown)

    def test_resume_is_bounded_in_time(self):
        h = self.h
        h.refuse = True
        h.close()
        h.clock.pump([0.25] * 200)
        self.assertEqual(h.session.exitCode, 1)
        # Tried at 0.5, 1.5, 3.5, 7.5, 15.5, 23.5 and 30 s, then gave up.
        self.assertEqual(len(h.wires), 8)
        self.assertIn("reconnecting in 6.5 s", h.text())

    def test_no_resume_after_quit(self):
        h = self.h
        h.console.dataReceived(b"/quit\r")
        self.assertEqual(h.sent(), [(T.BYE, b"")])
        h.close()
        h.clock.advance(60)
        self.assertEqual((len(h.wires), h.session.exitCode), (1, 0))

    def test_no_resume_after_a_fatal_error(self):
        h = self.h
        h.receive(T.ERROR, b"KICKED.an operator removed you")
        h.close()
        h.clock.advance(60)
        self.assertEqual((len(h.wires), h.session.exitCode), (1, 1))
        self.assertIn("[KICKED]", h.text())


class HistoryTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()
        self.h.login()
        self.h.shown()

    def test_history_on_join_comes_first_and_nothing_twice(self):
        h = self.h
        h.enter(b"dev", 20)
        h.receive(T.ROOM_TOPIC, b"dev.ship it")  # the greeting: not numbered
        h.marked(b"dev", 25, T.ROOM_MESSAGE, b"dev.2.40.bob.live")  # held back
        h.marked(b"lobby", 26, T.MESSAGE, b"2.40.bob.lobby line")  # not held
        h.receive(T.HISTORY, b"dev.4")
        h.marked(b"dev", 5, T.ROOM_MESSAGE, b"dev.3.50.ann.old")
        h.marked(b"dev", 7, T.ROOM_LEAVE, b"dev.3.50.ann.part")
        h.marked(b"dev", 20, T.ROOM_JOIN, b"dev.1.33.me")
        h.marked(b"dev", 25, T.ROOM_MESSAGE, b"dev.2.40.bob.live")
        h.marked(b"dev", 30, T.ROOM_MESSAGE, b"dev.2.40.bob.after")
        shown = h.text()
        lines = [
            "[dev] * you joined",
            "[dev] topic: ship it",
            "bob: lobby line",
            "(history) [dev] ann: old",
            "(history) [dev] * ann left (part)",
            "[dev] bob: live",
            "[dev] bob: after",
        ]
        at = [shown.find(line) for line in lines]
        self.assertNotIn(-1, at, shown)
        self.assertEqual(at, sorted(at))
        for once in ("you joined", "bob: live"):
            self.assertEqual(shown.count(once), 1, shown)
        self.assertEqual(len(h.session.rooms.book.pending), 0)

    def test_history_refused_lets_the_room_go_on(self):
        h = self.h
        h.enter(b"dev", 20)
        h.marked(b"dev", 25, T.ROOM_MESSAGE, b"dev.2.40.bob.live")
        h.receive(T.ERROR, b"NO_SUCH_ROOM.no room dev")
        shown = h.text()
        self.assertIn("[dev] bob: live", shown)
        self.assertNotIn("NO_SUCH_ROOM", shown)

    def test_history_with_colour_is_dim(self):
        from chatd.client.render import history_line

        self.assertEqual(history_line("x", False), "(history) x")
        self.assertEqual(history_line("x", True), "\x1b[2m(history)\x1b[0m x")


class OlderServerTests(SynchronousTestCase):
    def test_a_1_1_server_chats_as_before(self):
        h = Harness()
        h.session.start()
        self.assertEqual(h.sent(), [(T.VERSION, b"1.2")])
        h.receive(T.ERROR, UNKNOWN)
        self.assertEqual(h.sent(), [(T.HELLO, b"me")])  # no RESUMABLE
        h.receive(T.WELCOME, b"me.1.33")
        h.receive(T.JOIN, b"1.33.me")
        self.assertEqual(h.sent(), [(T.READY, b"")])  # no VERSION again
        h.console.dataReceived(b"/join dev\r")
        self.assertEqual(h.sent(), [])
        shown = h.text()
        self.assertIn(NO_ROOMS, shown)
        self.assertNotIn("UNKNOWN_TYPE", shown)
        h.close()
        self.assertEqual((len(h.wires), h.session.exitCode), (1, 1))

    def test_no_token_no_resume(self):
        """RESUMABLE 0 (--resume-window 0): numbers, no token, no resume."""
        h = Harness()
        h.login(window=b"0", token=None)
        h.enter(b"dev", 20)  # HISTORY still asked
        h.receive(T.HISTORY, b"dev.0")
        h.close()
        h.clock.advance(60)
        self.assertEqual((len(h.wires), h.session.exitCode), (1, 1))

    def test_no_token_with_reconnect_logs_in_afresh(self):
        h = Harness(reconnect=True)
        h.login(window=b"0", token=None)
        h.close()
        h.clock.advance(1)
        self.assertEqual(len(h.wires), 2)
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(
            h.sent(), [(T.VERSION, b"1.2"), (T.RESUMABLE, b""), (T.HELLO, b"me")]
        )

    def test_a_script_on_a_1_1_server_chats_as_before(self):
        h = Harness(interactive=False)
        h.session.start()
        h.receive(T.ERROR, UNKNOWN)
        self.assertEqual(h.sent(), [(T.VERSION, b"1.2"), (T.HELLO, b"me")])
        h.receive(T.WELCOME, b"me.1.33")
        h.receive(T.JOIN, b"1.33.me")
        h.session.typed("hi")
        self.assertEqual(h.sent(), [(T.READY, b""), (T.SAY, b"hi")])
        self.assertEqual(h.errors.getvalue(), "")


class PipeResumeTests(SynchronousTestCase):
    """Pipe mode (a script) resumes too: each line delivered once, in order."""

    def setUp(self):
        self.h = Harness(interactive=False)
        self.h.login()

    def resumed(self, since: bytes) -> None:
        """The first retry dials and resumes; up to the replay's PING."""
        h = self.h
        h.clock.advance(0.5)
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(h.sent(), [(T.VERSION, b"1.2"), (T.RESUME, TOKEN)])
        h.receive(T.WELCOME, b"me.1.33")
        h.receive(T.TOKEN, b"second")
        # No SAY before the replay is over: it may confirm the unsure lines.
        self.assertEqual(
            h.sent(), [(T.SINCE, since), (T.READY, b""), (T.PING, REPLAYED)]
        )

    def test_lines_in_flight_and_typed_while_away_go_once_in_order(self):
        h = self.h
        for text in ("a", "b", "c"):
            h.session.typed(text)
        self.assertEqual([p for t, p in h.sent() if t == T.SAY], [b"a", b"b", b"c"])
        h.marked(b"lobby", 20, T.MESSAGE, b"1.33.me.a")  # "a" delivered, seen
        h.close()  # "b" reached the server, "c" did not: the client cannot tell
        h.session.typed("d")  # read while detached
        h.session.endOfInput()
        self.resumed(b"lobby.20")
        h.marked(b"lobby", 30, T.MESSAGE, b"1.33.me.b")  # the replay: "b" was
        h.marked(b"lobby", 40, T.MESSAGE, b"2.40.bob.meanwhile")
        self.assertEqual(h.sent(), [])
        h.receive(T.PONG, REPLAYED)
        self.assertEqual(h.sent(), [(T.SAY, b"c"), (T.SAY, b"d")])  # not "b" again
        h.marked(b"lobby", 50, T.MESSAGE, b"1.33.me.c")
        h.marked(b"lobby", 60, T.MESSAGE, b"1.33.me.d")
        self.assertEqual(h.sent(), [(T.BYE, b"")])  # every line delivered
        h.close()
        self.assertEqual(h.session.exitCode, 0)
        text = h.text()
        self.assertIn("reconnected, 2 missed messages delivered", text)
        self.assertNotIn("not sent", text)
        self.assertEqual(text.count("bob: meanwhile"), 1)

    def afresh(self, welcome: bytes) -> None:
        """The connection drops; the retry's RESUME is BAD_TOKEN, and the
        fresh login is welcomed with ``welcome``."""
        h = self.h
        h.close()
        h.clock.advance(0.5)
        h.receive(T.VERSION, b"1.2")
        h.receive(T.ERROR, b"BAD_TOKEN.that token resumes nothing")
        h.receive(T.RESUMABLE, b"60")
        h.receive(T.WELCOME, welcome)

    def test_a_bad_token_sends_the_unsure_lines_again(self):
        """No replay to tell: a fresh login sends what may not have arrived
        (as --reconnect always did), in order, after the earlier lines."""
        h = self.h
        h.session.typed("a")
        h.sent()
        self.afresh(b"me.4.33")
        self.assertEqual(
            h.sent(),
            [(T.VERSION, b"1.2"), (T.RESUME, TOKEN), (T.RESUMABLE, b""),
             (T.HELLO, b"me"), (T.READY, b""), (T.SAY, b"a")],
        )  # fmt: skip

    def test_a_new_session_forgets_the_old_numbers(self):
        """After a fresh login (the server restarted), its numbers start
        again: our JOIN is shown, not taken for a repeat."""
        h = self.h
        self.afresh(b"me.1.33")
        h.shown()
        h.marked(b"lobby", 10, T.JOIN, b"1.33.me")  # lobby.10 again
        self.assertIn("joined as me", h.shown())


class Screen(StringTransport):
    """A Console's stdout: fires Deferreds when a text appears on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[bytes, defer.Deferred]] = []
        self.console: Console | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        for text, d in list(self.waits):
            if text in self.value():
                self.waits.remove((text, d))
                d.callback(None)

    def waitFor(self, text: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if text.encode() in self.value():
            d.callback(None)
        else:
            self.waits.append((text.encode(), d))
        return d

    def loseConnection(self) -> None:
        super().loseConnection()
        if self.console is not None:
            self.console.connectionLost(Failure(error.ConnectionDone()))


class EndToEndTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon("--stats-interval", "0")
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()

    def client(
        self, name: str, interactive: bool, gate: defer.Deferred
    ) -> tuple[Screen, Session]:
        """A resuming client Session, started: its first dial at once, the
        next ones once ``gate`` fires."""
        dial = connector(reactor, "127.0.0.1", self.daemon.port, None)
        dials = []

        def connect(factory):
            dials.append(factory)
            if len(dials) == 1:
                return dial(factory)
            return gate.addCallback(lambda _: dial(factory))

        screen = Screen()
        console = Console(
            interactive, False, terminalWidth=lambda: 80, errors=io.StringIO()
        )
        console.makeConnection(screen)
        screen.console = console
        session = Session(reactor, console, connect, "127.0.0.1", name, resume=True)
        session.start()
        self.addCleanup(lambda: session.done)
        self.addCleanup(session.quit)
        return screen, session

    @defer.inlineCallbacks
    def test_cut_connection_resumes_with_every_missed_message_once(self):
        gate: defer.Deferred = defer.Deferred()
        screen, alice = self.client("alice", True, gate)
        yield screen.waitFor("* you joined as alice")
        bob = yield connect_bob(self.daemon.port)
        self.addCleanup(bob.transport.abortConnection)
        yield screen.waitFor("* bob joined")

        alice.proto.transport.abortConnection()  # the client side resets
        texts = [b"missed %d" % i for i in range(5)]
        for text in texts:
            bob.send(T.SAY, text)
        for _ in texts:  # sequenced: bob's own copies came back
            yield bob.nextOf(T.MESSAGE)
        gate.callback(None)
        yield screen.waitFor("reconnected, 5 missed messages delivered")
        bob.send(T.SAY, b"live one")
        yield screen.waitFor("bob: live one")
        shown = screen.value().decode()
        for text in [*texts, b"live one"]:
            self.assertEqual(shown.count(f"bob: {text.decode()}\r"), 1, shown)
        self.assertLess(shown.find("missed 4"), shown.find("reconnected"))
        self.assertEqual(shown.count("joined as alice"), 1)  # resumed, not a new login
        alice.quit()
        yield alice.done
        self.assertEqual(alice.exitCode, 0)
        bob.send(T.BYE)

    @defer.inlineCallbacks
    def test_a_script_cut_off_resumes_and_every_line_arrives_once(self):
        """Pipe mode: lines in flight when the connection is reset, and
        lines read while it is away, each reach bob once, in order."""
        bob = yield connect_bob(self.daemon.port)
        self.addCleanup(bob.transport.abortConnection)
        gate: defer.Deferred = defer.Deferred()
        screen, bot = self.client("bot", False, gate)
        console = bot.console
        yield bob.nextOf(T.JOIN)
        texts = [f"l{i}" for i in range(10)]
        bot.typed(texts[0])
        yield screen.waitFor("You: l0")
        for text in texts[1:5]:
            bot.typed(text)
        bot.proto.transport.abortConnection()  # with l1..l4 in flight
        for text in texts[5:]:
            bot.typed(text)  # read while away
        bot.endOfInput()
        gate.callback(None)
        yield bot.done
        self.assertEqual(bot.exitCode, 0, console.errors.getvalue())
        self.assertIn("reconnected", console.errors.getvalue())
        said = []
        while True:
            ftype, payload = yield bob.next()
            self.assertNotEqual(ftype, T.JOIN, payload)  # resumed, not new
            if ftype == T.LEAVE:
                self.assertTrue(payload.endswith(b".bot.quit"), payload)
                break
            if ftype == T.MESSAGE:
                said.append(payload.rsplit(b".", 1)[1].decode())
        self.assertEqual(said, texts)  # each once, in order
        bob.send(T.BYE)


@defer.inlineCallbacks
def connect_bob(port: int):  # type: ignore[no-untyped-def]
    bob = yield connect(port)
    bob.send(T.HELLO, b"bob")
    bob.send(T.READY)
    yield bob.nextOf(T.JOIN)
    return bob
