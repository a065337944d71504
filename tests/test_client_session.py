"""chatd-client's Session and pipe-mode Pacer, on a task.Clock and in-memory transports."""

from __future__ import annotations

import io

from twisted.internet import defer, error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatd.client.console import Console
from chatd.client.pacing import MAX_GAP, WINDOW, Pacer
from chatd.client.session import Session
from chatd.core.limits import TokenBucket
from chatd.wire import FrameType as T
from chatd.wire import encode, split_fields
from tests.daemon import HEADER


class RateLimitedServer:
    """Answers each SAY at once, as chatd with ``--rate-limit`` would."""

    def __init__(self, clock: task.Clock, rate: float, burst: int) -> None:
        self.bucket = TokenBucket(rate, burst, clock.seconds)
        self.delivered: list[str] = []
        self.refusals = 0
        self.pacer: Pacer | None = None
        self.answers: list[tuple[str, str]] = []

    def send(self, text: str) -> None:
        # Answered after the current call returns, in order, like a socket.
        if self.bucket.take():
            self.delivered.append(text)
            self.answers.append(("ack", text))
        else:
            self.refusals += 1
            self.answers.append(("RATE_LIMITED", text))

    def answer(self) -> None:
        while self.answers:
            kind, _ = self.answers.pop(0)
            if kind == "ack":
                self.pacer.acked()
            else:
                self.pacer.refused(kind, "too many messages")


class PacerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.sent: list[str] = []
        self.reports: list[tuple[int, str, str]] = []
        self.warnings: list[str] = []
        self.pacer = Pacer(
            self.clock,
            self.sent.append,
            lambda *report: self.reports.append(report),
            lambda text: ("BAD_TEXT", "no bells") if "\x07" in text else None,
            warn=self.warnings.append,
        )

    def test_window_of_unacknowledged_says(self):
        """At most WINDOW SAYs in flight; each acknowledgement lets one more go."""
        for n in range(1, 21):
            self.pacer.add(n, f"line {n}")
        self.assertEqual(self.sent, [])  # not before the session is ACTIVE
        self.pacer.start()
        self.assertEqual(len(self.sent), WINDOW)
        self.pacer.acked()
        self.assertEqual(self.sent[-1], f"line {WINDOW + 1}")
        self.assertEqual(self.pacer.backlog, 19)

    def test_refused_line_is_resent_first_after_a_backoff(self):
        for n in range(1, 5):
            self.pacer.add(n, str(n))
        self.pacer.start()
        self.pacer.acked()  # 1 delivered
        self.pacer.refused("RATE_LIMITED", "slow down")  # 2
        self.pacer.refused("RATE_LIMITED", "slow down")  # 3
        self.assertEqual(self.warnings, [])
        self.pacer.acked()  # 4 got through (a token refilled in between)
        self.assertEqual(
            self.warnings,
            [
                "line 4 was delivered before line 2 "
                "(the server accepted it while refusing the earlier one)"
            ],
        )
        self.assertEqual(self.sent, ["1", "2", "3", "4"])
        self.clock.advance(0.04)
        self.assertEqual(len(self.sent), 4)  # backing off
        self.clock.advance(0.02)
        self.assertEqual(self.sent[4:], ["2"])
        self.pacer.refused("RATE_LIMITED", "slow down")  # 2 again: still first
        self.clock.advance(0.2)
        self.assertEqual(self.sent[5:], ["2"])
        self.pacer.acked()
        self.clock.advance(0.2)
        self.assertEqual(self.sent[6:], ["3"])
        self.assertEqual(self.reports, [])

    def test_paces_to_a_rate_limited_server(self):
        """30 lines against 5/s with a burst of 10: all delivered, in order, ~4 s."""
        server = RateLimitedServer(self.clock, rate=5, burst=10)
        pacer = Pacer(self.clock, server.send, lambda *r: self.reports.append(r))
        server.pacer = pacer
        for n in range(1, 31):
            pacer.add(n, str(n))
        pacer.start()
        for _ in range(2000):
            server.answer()
            if pacer.idle:
                break
            self.clock.advance(0.01)
        self.assertEqual(server.delivered, [str(n) for n in range(1, 31)])
        self.assertTrue(pacer.idle)
        self.assertEqual((pacer.delivered, pacer.failed), (30, 0))
        self.assertEqual(self.reports, [])
        self.assertGreaterEqual(self.clock.seconds(), 4.0)
        self.assertLess(self.clock.seconds(), 8.0)  # near the server's rate
        self.assertLess(server.refusals, 25)  # it slows down, not hammers

    def test_other_refusals_are_reported_with_line_numbers(self):
        self.pacer.add(1, "fine")
        self.pacer.add(2, "bell\x07")
        self.pacer.add(3, "also fine")
        self.pacer.start()
        self.assertEqual(self.sent, ["fine", "also fine"])  # 2 never sent
        self.pacer.acked()
        self.pacer.refused("TOO_LONG", "at most 3 bytes")
        self.assertEqual(
            self.reports,
            [(2, "BAD_TEXT", "no bells"), (3, "TOO_LONG", "at most 3 bytes")],
        )
        self.assertEqual((self.pacer.delivered, self.pacer.failed), (1, 2))
        self.assertTrue(self.pacer.idle)

    def test_gap_is_bounded(self):
        self.pacer.add(1, "x")
        self.pacer.start()
        for _ in range(20):
            self.pacer.refused("RATE_LIMITED", "slow down")
            self.clock.advance(MAX_GAP)
        self.assertEqual(self.pacer.gap, MAX_GAP)
        self.assertEqual(len(self.sent), 21)

    def test_connection_lost_resends_in_order(self):
        for n in range(1, 5):
            self.pacer.add(n, str(n))
        self.pacer.start()
        self.pacer.refused("RATE_LIMITED", "slow down")  # 1; 2, 3, 4 in flight
        self.pacer.stop()
        self.pacer.start()
        self.assertEqual(self.sent[4:], ["1", "2", "3", "4"])
        self.pacer.acked()
        self.pacer.stop()  # 2, 3, 4 in flight: not known to be delivered
        self.pacer.add(5, "5")
        self.assertEqual(self.pacer.abandon(), [(n, str(n)) for n in range(2, 6)])
        self.assertEqual(self.pacer.failed, 4)


def frames(transport: StringTransport) -> list[tuple[int, bytes]]:
    """The frames written to ``transport`` since the last call."""
    data, out = transport.value(), []
    transport.clear()
    while data:
        ftype, size = HEADER.unpack_from(data)
        out.append((ftype, data[8 : 8 + size]))
        data = data[8 + size :]
    return out


class SessionHarness:
    """A Session on a Clock, its server connections and screen in memory."""

    def __init__(self, interactive: bool, name: str | None = "me", **kw) -> None:
        self.clock = task.Clock()
        self.errors = io.StringIO()
        self.console = Console(
            interactive, False, terminalWidth=lambda: 60, errors=self.errors
        )
        self.screen = StringTransport()
        self.console.makeConnection(self.screen)
        self.wires: list[StringTransport] = []
        self.session = Session(
            self.clock, self.console, self.connect, "host:1", name, **kw
        )

    def connect(self, factory) -> defer.Deferred:
        proto = factory.buildProtocol(None)
        wire = StringTransport()
        self.wires.append(wire)
        proto.makeConnection(wire)
        return defer.succeed(proto)

    def sent(self) -> list[tuple[int, bytes]]:
        return frames(self.wires[-1])

    def receive(self, ftype: int, payload: bytes = b"") -> None:
        self.session.proto.dataReceived(encode(ftype, payload))

    def join(self, user_id: int = 1) -> None:
        """Start, and complete the handshake as ``me``."""
        self.session.start()
        self.receive(T.WELCOME, b"me.%d.33" % user_id)
        self.receive(T.JOIN, b"%d.33.me" % user_id)

    def shown(self) -> str:
        text = self.screen.value().decode()
        self.screen.clear()
        return text

    def close(self, proto=None) -> None:
        (proto or self.session.proto).connectionLost(Failure(error.ConnectionDone()))


class PipeSessionTests(SynchronousTestCase):
    def test_refused_lines_are_numbered_and_the_status_is_1(self):
        h = SessionHarness(interactive=False)
        for line in ["ok", "bad \x1b[31m", "y" * 1100, "", "last"]:
            h.session.typed(line)
        h.session.endOfInput()
        h.join()
        says = [p for t, p in h.sent() if t == T.SAY]
        self.assertEqual(says, [b"ok", b"last"])
        h.receive(T.MESSAGE, b"1.33.me.ok")
        h.receive(T.MESSAGE, b"1.33.me.last")
        self.assertEqual(h.sent(), [(T.BYE, b"")])
        h.close()
        self.assertEqual(h.session.exitCode, 1)
        self.assertEqual(
            h.errors.getvalue().splitlines(),
            [
                "chatd-client: line 2 not sent: BAD_TEXT "
                "(text must be one line without control characters)",
                "chatd-client: line 3 not sent: TOO_LONG "
                "(text too long: 1100 bytes, at most 1008)",
            ],
        )

    def test_rate_limited_line_is_resent_not_lost(self):
        h = SessionHarness(interactive=False)
        h.join()
        h.sent()
        for n in range(1, 4):
            h.session.typed(f"n{n}")
        h.session.endOfInput()
        self.assertEqual(len(h.sent()), 3)
        h.receive(T.MESSAGE, b"1.33.me.n1")
        h.receive(T.ERROR, b"RATE_LIMITED.too many messages")
        h.receive(T.ERROR, b"RATE_LIMITED.too many messages")
        self.assertEqual(h.errors.getvalue(), "")  # handled, not alarming
        h.clock.advance(1)
        self.assertEqual(h.sent(), [(T.SAY, b"n2")])
        h.receive(T.MESSAGE, b"1.33.me.n2")
        h.clock.advance(1)
        self.assertEqual(h.sent(), [(T.SAY, b"n3")])
        h.receive(T.MESSAGE, b"1.33.me.n3")
        self.assertEqual(h.sent(), [(T.BYE, b"")])
        h.close()
        self.assertEqual(h.session.exitCode, 0)

    def test_lines_left_when_the_connection_drops_are_reported(self):
        h = SessionHarness(interactive=False)
        h.join()
        for n in range(1, 4):
            h.session.typed(f"n{n}")
        h.receive(T.MESSAGE, b"1.33.me.n1")
        h.close()
        self.assertEqual(h.session.exitCode, 1)
        self.assertIn(
            "2 lines not sent (lines 2 to 3): no connection", h.errors.getvalue()
        )

    def test_closed_stderr_does_not_stop_the_session(self):
        h = SessionHarness(interactive=False)
        h.errors.close()
        h.join()
        h.session.typed("bell\x07")
        h.close()
        h.clock.advance(5)  # stdout (a StringTransport) never reports closing
        self.assertEqual(h.session.exitCode, 1)
        self.assertTrue(h.session.done.called)

    def test_stdin_paused_while_far_ahead(self):
        h = SessionHarness(interactive=False)
        h.join()
        for n in range(1000):
            h.session.typed(f"n{n}")
        self.assertEqual(h.screen.producerState, "paused")
        for n in range(900):
            h.receive(T.MESSAGE, b"1.33.me.n%d" % n)
        self.assertEqual(h.screen.producerState, "producing")


class InteractiveSessionTests(SynchronousTestCase):
    def setUp(self):
        self.h = SessionHarness(interactive=True)
        self.h.join()
        self.h.sent()
        self.h.shown()

    def test_whisper_shown_only_once_confirmed(self):
        h = self.h
        h.console.dataReceived(b"/msg bob psst\r")
        self.assertEqual(h.sent(), [(T.WHISPER, b"bob.psst"), (T.PING, b"w1")])
        self.assertNotIn("private to", h.shown())
        h.receive(T.PONG, b"w1")
        self.assertIn("(private to bob) You: psst", h.shown())

    def test_failed_whisper_is_not_shown_as_sent(self):
        h = self.h
        h.console.dataReceived(b"/msg nobody hi\r")
        h.receive(T.ERROR, b"NO_SUCH_USER.no active user by that name")
        h.receive(T.PONG, b"w1")
        shown = h.shown()
        self.assertNotIn("private to", shown)
        self.assertIn(
            "! whisper to nobody not delivered: no active user by that name "
            "[NO_SUCH_USER]",
            shown,
        )

    def test_say_errors_are_not_blamed_on_a_later_whisper(self):
        h = self.h
        h.console.dataReceived(b"fast\r/msg bob psst\r")
        h.receive(T.ERROR, b"RATE_LIMITED.too many messages")  # for the SAY
        h.receive(T.PONG, b"w1")
        shown = h.shown()
        self.assertIn("[RATE_LIMITED]", shown)
        self.assertIn("(private to bob) You: psst", shown)
        self.assertNotIn("not delivered", shown)

    def test_whisper_behind_an_unacknowledged_say(self):
        """NO_SUCH_USER answers only a WHISPER, even with a SAY still ahead."""
        h = self.h
        h.console.dataReceived(b"hello\r/msg nobody a\r/msg bob b\r")
        h.receive(T.ERROR, b"NO_SUCH_USER.no active user by that name")
        h.receive(T.PONG, b"w1")
        h.receive(T.PONG, b"w2")
        h.receive(T.MESSAGE, b"1.33.me.hello")
        shown = h.shown()
        self.assertIn("whisper to nobody not delivered", shown)
        self.assertNotIn("private to nobody", shown)
        self.assertIn("(private to bob) You: b", shown)
        self.assertIn("You: hello", shown)
        self.assertEqual(len(h.session.requests), 0)

    def test_too_long_line_stays_in_the_editor(self):
        h = self.h
        h.console.dataReceived(b"x" * 1200 + b"\r")
        self.assertEqual(h.sent(), [])
        self.assertIn("text too long", h.shown())
        self.assertEqual(h.console.editor.buffer, "x" * 1200)
        h.console.dataReceived(b"\x7f" * 300 + b"\r")
        self.assertEqual(h.sent(), [(T.SAY, b"x" * 900)])

    def test_resize_redraws_to_the_new_width(self):
        h = self.h
        h.console.dataReceived("日本語".encode() * 10)
        h.shown()
        h.console.terminalWidth = lambda: 21
        h.console.resized()
        row = h.shown().rsplit("\x1b[K", 1)[1]
        self.assertTrue(row.endswith("本語"))
        from chatd.client.lineedit import text_width

        self.assertIn(text_width(row), (19, 20))  # "<" and 9 of 2 columns


class PasswordTests(SynchronousTestCase):
    def test_auth_failed_on_a_terminal_asks_and_retries(self):
        h = SessionHarness(interactive=True)
        h.session.start()
        self.assertEqual(h.sent(), [(T.HELLO, b"me")])
        h.receive(T.ERROR, b"AUTH_FAILED.wrong or missing password")
        first = h.session.proto
        h.close(first)  # the server hangs up
        self.assertIn("Password: ", h.shown())
        h.console.dataReceived(b"s3cret.x\r")
        self.assertNotIn("s3cret", h.shown())  # not echoed
        self.assertEqual(len(h.wires), 2)
        self.assertEqual(split_fields(h.sent()[0][1], 2), [b"me", b"s3cret.x"])
        h.receive(T.WELCOME, b"me.2.33")
        self.assertEqual(h.session.state, "active")
        self.assertNotIn("s3cret", h.console.editor.history)

    def test_auth_failed_in_a_script_exits_1(self):
        h = SessionHarness(interactive=False)
        h.session.start()
        h.receive(T.ERROR, b"AUTH_FAILED.wrong or missing password")
        h.close()
        self.assertEqual(h.session.exitCode, 1)
        self.assertIn("[AUTH_FAILED]", h.errors.getvalue())
