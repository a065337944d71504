"""End to end: the real chatd-client process against a real twistd chatd.

Interactive clients run on a pseudo-terminal, scripted ones on pipes.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import termios

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

import chatd
from tests.clientproc import COLORED, daemonLogs, spawn
from tests.daemon import Daemon, refusingPort


class DaemonTestCase(unittest.TestCase):
    timeout = 30
    daemonOptions: tuple[str, ...] = ()

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon("--stats-interval", "0", *self.daemonOptions)
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
        self.server = f"127.0.0.1:{self.daemon.port}"


class InteractiveTests(DaemonTestCase):
    @defer.inlineCallbacks
    def test_two_people_chat(self):
        """Colour, /who, /msg, /quit and Ctrl-C on two pseudo-terminals."""
        alice = spawn(self, "--name", "alice", self.server, pty=True)
        yield alice.waitFor("* you joined as alice")
        bob = spawn(self, "--name", "bob", self.server, pty=True)
        yield bob.waitFor("* you joined as bob")
        yield alice.waitFor("\x1b[2m* bob joined\x1b[0m")

        bob.type(b"hello alice\r")
        match = yield alice.waitFor(COLORED % b"bob" + rb": hello alice")
        self.assertTrue(0 <= int(match.group(1)) <= 255)
        yield bob.waitFor(COLORED % b"You" + rb": hello alice")

        # Alice types half a line while bob's message arrives: her partial
        # input is redrawn after the message.
        alice.type(b"half a li")
        yield alice.waitFor("> half a li")
        bob.type(b"second\r")
        yield alice.waitFor(re.escape(b": second\r\r\n\r\x1b[K> half a li"))
        alice.type(b"ne\r")
        yield bob.waitFor(COLORED % b"alice" + rb": half a line")

        alice.type(b"/who\r")
        yield alice.waitFor(rb"\* 2 online: \x1b\[0m" + COLORED % b"alice" + b", ")
        alice.type(b"/msg bob psst\r")
        yield alice.waitFor("(private to bob)")
        yield bob.waitFor(rb"\(private\)\x1b\[0m " + COLORED % b"alice" + b": psst")
        alice.type(b"/msg nobody x\r")
        yield alice.waitFor("whisper to nobody not delivered")
        yield alice.waitFor("[NO_SUCH_USER]")
        self.assertNotIn(b"(private to nobody)", alice.output)
        alice.type(b"/frobnicate\r")
        yield alice.waitFor("unknown command /frobnicate")

        bob.type(b"/quit\r")
        self.assertEqual((yield bob.ended), 0)
        yield alice.waitFor("* bob left")
        self.assertNotIn(b"bob left (", alice.output)

        alice.type(b"\x03")  # Ctrl-C: raw mode delivers it as a key
        self.assertEqual((yield alice.ended), 0)
        yield daemonLogs(self.daemon, "name=alice reason=quit")
        yield daemonLogs(self.daemon, "name=bob reason=quit")

    @defer.inlineCallbacks
    def test_name_prompt_retries(self):
        """Without --name it asks; a taken or bad name is explained and asked again."""
        holder = spawn(self, "--name", "carol", self.server)
        yield holder.waitFor("* you joined as carol")
        client = spawn(self, self.server, pty=True)
        yield client.waitFor("Your name: ")
        client.type(b"no spaces\r")
        yield client.waitFor("a name is 1 to 32 ASCII letters")
        client.type(b"Carol\r")
        yield client.waitFor("'Carol' refused: NAME_TAKEN")
        client.type(b"dave\r")
        yield client.waitFor("* you joined as dave")
        yield holder.waitFor("* dave joined")
        client.type(b"\x04")  # Ctrl-D on an empty line leaves too
        self.assertEqual((yield client.ended), 0)
        holder.closeStdin()
        self.assertEqual((yield holder.ended), 0)

    @defer.inlineCallbacks
    def test_wide_input_and_resize(self):
        """CJK input is fitted in columns; SIGWINCH refits it to the new width."""
        alice = spawn(self, "--name", "alice", self.server, pty=True)
        yield alice.waitFor("* you joined as alice")
        wide = "日本語のテキスト入力" * 3  # 30 characters, 60 columns
        alice.type(wide.encode())
        yield alice.waitFor(f"> {wide}")
        winsize = struct.pack("HHHH", 24, 30, 0, 0)
        fcntl.ioctl(alice.process.fd, termios.TIOCSWINSZ, winsize)
        # 29 columns: "<" and the last 14 characters (28 columns).
        yield alice.waitFor(f"\r\x1b[K<{wide[-14:]}")
        alice.type(b"\x01")  # Home: the prompt and the start come back
        yield alice.waitFor(f"\r\x1b[K> {wide[:13]}\x1b[")
        alice.type(b"\x03")
        self.assertEqual((yield alice.ended), 0)

    @defer.inlineCallbacks
    def test_password_prompt(self):
        """AUTH_FAILED on a terminal: ask for the password (no echo), retry."""
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("open-sesame\n")
        daemon = Daemon("--stats-interval", "0", "--password-file", secret)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        client = spawn(self, "--name", "ali", f"127.0.0.1:{daemon.port}", pty=True)
        yield client.waitFor("AUTH_FAILED")
        yield client.waitFor("Password: ")
        client.type(b"guess\r")
        yield client.waitFor("wrong password; AUTH_FAILED")
        client.type(b"open-sesame\r")
        yield client.waitFor("* you joined as ali")
        self.assertNotIn(b"guess", client.output)
        self.assertNotIn(b"open-sesame", client.output)
        client.type(b"/quit\r")
        self.assertEqual((yield client.ended), 0)


class RoomTests(DaemonTestCase):
    daemonOptions = ("--room", "ops:read only")

    @defer.inlineCallbacks
    def test_two_people_in_a_room(self):
        """/join, lines marked [room], /topic, /rooms, /who, /part, room errors."""
        alice = spawn(self, "--no-color", "--name", "alice", self.server, pty=True)
        yield alice.waitFor("* you joined as alice")
        bob = spawn(self, "--no-color", "--name", "bob", self.server, pty=True)
        yield bob.waitFor("* you joined as bob")
        listing = (
            rb"(?s)\x1b\[Klobby \(2 users\)\r.*Kops \(0 users\): read only"
            rb"\r.*Kdev \(2 users\): ship it\r"
        )
        # Who types what, then what each one sees (in this order).
        script = [
            (alice, b"/join dev", [(alice, "[dev] * you joined"), (alice, "[dev]> ")]),
            # The first spelling of a room is kept:
            (bob, b"/join DEV", [(bob, "[dev] * you joined"), (alice, "[dev] * bob joined")]),
            (alice, b"/topic ship it", [(bob, "[dev] topic: ship it")]),
            (bob, b"hi", [(alice, "[dev] bob: hi"), (bob, "[dev] You: hi")]),
            (alice, b"/rooms", [(alice, listing)]),
            (alice, b"/who", [(alice, "[dev] * 2 here: alice, bob")]),
            (bob, b"/part", [(bob, "[dev] * you left"), (alice, "[dev] * bob left (part)")]),
            (bob, b"in the lobby", [(alice, re.escape(b"\r\x1b[Kbob: in the lobby"))]),
            (alice, b"/join ops", [(alice, "[ops] topic: read only")]),
            (alice, b"/topic mine", [(alice, "[TOPIC_LOCKED]")]),
            (alice, b"/who nosuch", [(alice, "[NO_SUCH_ROOM]")]),
        ]  # fmt: skip
        for typist, line, seen in script:
            typist.type(line + b"\r")
            for client, pattern in seen:
                yield client.waitFor(pattern)
        for client in (alice, bob):
            client.type(b"/quit\r")
            self.assertEqual((yield client.ended), 0)
            self.assertNotIn(b"UNKNOWN_TYPE", client.output)


class ScriptedTests(DaemonTestCase):
    @defer.inlineCallbacks
    def test_pipe_chat(self):
        """Lines in are SAYs; messages out are plain lines; EOF waits, BYE, 0."""
        listener = spawn(self, "--name", "ear", self.server)
        yield listener.waitFor("* you joined as ear")
        bot = spawn(self, "--name", "bot", self.server)
        bot.type(b"hi\nline two\n\n")
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 0)
        self.assertEqual(
            bot.text().splitlines(),
            ["* you joined as bot", "You: hi", "You: line two"],
        )
        yield listener.waitFor("* bot left\n")
        self.assertIn(b"bot: hi\nbot: line two\n", listener.output)
        self.assertNotIn(b"\x1b", listener.output)
        yield daemonLogs(self.daemon, "name=bot reason=quit")
        listener.closeStdin()
        self.assertEqual((yield listener.ended), 0)

    @defer.inlineCallbacks
    def test_signals_leave_cleanly(self):
        """Ctrl-C (SIGINT) and SIGTERM on a scripted client: BYE, exit 0."""
        for name, sig in (("int", "INT"), ("term", "TERM")):
            bot = spawn(self, "--name", name, self.server)
            yield bot.waitFor(f"* you joined as {name}")
            bot.process.signalProcess(sig)
            self.assertEqual((yield bot.ended), 0, bot.errors)
            yield daemonLogs(self.daemon, f"name={name} reason=quit")

    @defer.inlineCallbacks
    def test_bad_lines_are_numbered_and_exit_1(self):
        """A line the server would refuse is reported by number; the rest go; 1."""
        bot = spawn(self, "--name", "bot", self.server)
        bot.type(b"ok\nbad \x1b[31m\n" + b"x" * 1100 + b"\nlast\n")
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 1)
        self.assertEqual(
            bot.errors.decode().splitlines(),
            [
                "chatd-client: line 2 not sent: BAD_TEXT "
                "(text must be one line without control characters)",
                "chatd-client: line 3 not sent: TOO_LONG "
                "(text too long: 1100 bytes, at most 1007)",
            ],
        )
        self.assertIn(b"You: ok\nYou: last\n", bot.output)
        yield daemonLogs(self.daemon, "name=bot reason=quit")

    @defer.inlineCallbacks
    def test_server_gone_exits_nonzero(self):
        """A lost connection is reported on stderr and the exit status is 1."""
        bot = spawn(self, "--name", "bot", self.server)
        yield bot.waitFor("* you joined as bot")
        yield self.daemon.stop()
        self.assertEqual((yield bot.ended), 1)
        self.assertIn(b"server error: server is shutting down [SHUTDOWN]", bot.errors)
        self.assertIn(b"closed the connection", bot.errors)
        self.assertNotIn(b"Traceback", bot.errors)

    @defer.inlineCallbacks
    def test_reconnect(self):
        """With --reconnect a lost connection is retried until the server is back."""
        port = self.daemon.port
        bot = spawn(self, "--name", "bot", "--reconnect", self.server)
        yield bot.waitFor("* you joined as bot")
        yield self.daemon.stop()
        yield bot.waitFor("reconnecting in 1 s")
        again = Daemon("--stats-interval", "0")
        again.port = port
        again.args[again.args.index(again.listen)] = f"tcp:{port}:interface=127.0.0.1"
        self.addCleanup(again.stop)
        yield again.start()
        yield bot.waitFor(rb"(?s)joined as bot.*joined as bot", timeout=15)
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 0)


class RateLimitedTests(DaemonTestCase):
    daemonOptions = ("--rate-limit", "20", "--rate-burst", "5")

    @defer.inlineCallbacks
    def test_pipe_paces_itself(self):
        """``seq 1 60`` against 20/s, burst 5: every line arrives, in order; 0."""
        listener = spawn(self, "--name", "ear", self.server)
        yield listener.waitFor("* you joined as ear")
        bot = spawn(self, "--name", "bot", self.server)
        bot.type(b"".join(b"%d\n" % n for n in range(1, 61)))
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 0, bot.errors)
        self.assertEqual(bot.errors, b"")
        lines = bot.text().splitlines()
        self.assertEqual(lines[1:], [f"You: {n}" for n in range(1, 61)])
        yield listener.waitFor("* bot left\n")
        said = re.findall(rb"bot: (\d+)\n", bytes(listener.output))
        self.assertEqual(said, [b"%d" % n for n in range(1, 61)])
        self.assertIn("RATE_LIMITED", self.daemon.log)  # it was tested, not spared
        listener.closeStdin()
        self.assertEqual((yield listener.ended), 0)


class IPv6Tests(DaemonTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.daemonOptions = ("--listen", "tcp6:0:interface=\\:\\:1")
        yield super().setUp()
        self.port6 = self.daemon.ports()[1]

    @defer.inlineCallbacks
    def test_bracketed_ipv6_address(self):
        """``[::1]:PORT`` reaches the server's IPv6 listener."""
        bot = spawn(self, "--name", "six", f"[::1]:{self.port6}")
        yield bot.waitFor("* you joined as six")
        yield daemonLogs(self.daemon, "peer=::1:")
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 0, bot.errors)


class KeepaliveTests(DaemonTestCase):
    daemonOptions = ("--idle-timeout", "0.5")

    @defer.inlineCallbacks
    def test_idle_client_pings(self):
        """An idle client outlives the server's idle timeout by PINGing."""
        bot = spawn(self, "--name", "bot", "--keepalive", "0.15", self.server)
        yield bot.waitFor("* you joined as bot")
        yield task.deferLater(reactor, 1.3, lambda: None)
        self.assertFalse(bot.ended.called, bot.errors)
        bot.type(b"still here\n")
        yield bot.waitFor("You: still here")
        self.assertNotIn("IDLE_TIMEOUT", self.daemon.log)
        bot.closeStdin()
        self.assertEqual((yield bot.ended), 0)


class UsageTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_usage_errors_exit_2(self):
        """Bad arguments: one clear line on stderr, exit status 2, no traceback."""
        cases = {
            ("--name", "bot", "localhost:99999"): b"bad port",
            ("--name", "bot", "[::1"): b"bad server address",
            ("--name", "b o t", "localhost"): b"is not a name",
            ("localhost",): b"--name is required",
            ("--name", "bot", "--bogus"): b"unrecognized arguments",
            ("--name", "bot", "--tls", "--ca", "/nonexistent"): b"--ca: cannot read",
            ("--name", "bot", "--password-file", "/nonexistent"): b"--password-file",
        }
        clients = {args: spawn(self, *args) for args in cases}
        for args, client in clients.items():
            self.assertEqual((yield client.ended), 2, args)
            lines = client.errors.splitlines()
            self.assertEqual(len(lines), 1, client.errors)
            self.assertIn(cases[args], lines[0])

    @defer.inlineCallbacks
    def test_version(self):
        client = spawn(self, "--version")
        self.assertEqual((yield client.ended), 0)
        self.assertEqual(client.text(), f"chatd-client {chatd.__version__}\n")

    @defer.inlineCallbacks
    def test_connection_refused_exits_1(self):
        client = spawn(self, "--name", "bot", f"127.0.0.1:{refusingPort(self)}")
        self.assertEqual((yield client.ended), 1)
        self.assertEqual(client.errors.count(b"\n"), 1, client.errors)
        self.assertIn(b"connection refused", client.errors)
