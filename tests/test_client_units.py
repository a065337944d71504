"""chatd-client's pure parts: commands, rendering, the line editor, addresses."""

from __future__ import annotations

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatd.client import commands as c
from chatd.client.app import UsageError, describe_failure, parse_address
from chatd.client.lineedit import CLEAR_LINE, Key, LineEditor
from chatd.client.render import render_frame, safe, users_line
from chatd.wire import FrameType as T


class CommandTests(SynchronousTestCase):
    def test_parse(self):
        cases = {
            "hello": c.Say("hello"),
            "  spaced  ": c.Say("  spaced  "),
            "//etc/passwd": c.Say("/etc/passwd"),
            "/who": c.Who(),
            "/WHO": c.Who(),
            "/quit": c.Quit(),
            "/help": c.Help(),
            "/msg bob hi there": c.Whisper("bob", "hi there"),
            "/msg  bob   hi": c.Whisper("bob", "hi"),
            "/msg bob": c.Invalid("usage: /msg NAME text"),
            "/msg": c.Invalid("usage: /msg NAME text"),
            "/msg b.o hi": c.Invalid("'b.o' is not a valid user name"),
            "/dance": c.Invalid("unknown command /dance; /help lists the commands"),
            "": None,
            "   ": None,
        }
        for line, expected in cases.items():
            self.assertEqual(c.parse_command(line), expected, line)

    def test_check_text(self):
        self.assertIsNone(c.check_text("héllo", 10))
        self.assertIn("too long", c.check_text("é" * 6, 11))
        self.assertIsNone(c.check_text("é" * 5, 10))
        self.assertIn("control", c.check_text("bell\x07", 100))
        self.assertIn("control", c.check_text("\u202eevil", 100))

    def test_max_text(self):
        # 1016 - len("12.33.bob.")
        self.assertEqual(c.max_text(12, 33, "bob"), 1006)
        self.assertEqual(c.max_text(b"12", b"33", b"bob"), 1006)


class RenderTests(SynchronousTestCase):
    def test_message_plain_and_coloured(self):
        self.assertEqual(
            render_frame(T.MESSAGE, b"2.33.bob.hi. there", 1, False), "bob: hi. there"
        )
        self.assertEqual(
            render_frame(T.MESSAGE, b"2.33.bob.hi", 1, True),
            "\x1b[38;5;33mbob\x1b[0m: hi",
        )
        self.assertEqual(
            render_frame(T.MESSAGE, b"1.33.me.mine", 1, False), "You: mine"
        )

    def test_join_leave_are_dim(self):
        self.assertEqual(
            render_frame(T.JOIN, b"2.40.bob", 1, True), "\x1b[2m* bob joined\x1b[0m"
        )
        self.assertEqual(
            render_frame(T.JOIN, b"1.40.me", 1, False), "* you joined as me"
        )
        self.assertEqual(
            render_frame(T.LEAVE, b"2.40.bob.timeout", 1, False), "* bob left (timeout)"
        )
        self.assertEqual(
            render_frame(T.LEAVE, b"2.40.bob.quit", 1, False), "* bob left"
        )

    def test_whisper_error_notice(self):
        self.assertEqual(
            render_frame(T.WHISPERED, b"2.40.bob.psst", 1, False), "(private) bob: psst"
        )
        self.assertEqual(
            render_frame(T.ERROR, b"NO_SUCH_USER.no active user", 1, False),
            "! server error: no active user [NO_SUCH_USER]",
        )
        self.assertEqual(
            render_frame(T.NOTICE, b"MAINTENANCE.back soon", 1, False),
            "! server notice: back soon [MAINTENANCE]",
        )

    def test_uninteresting_frames(self):
        for ftype in (T.PONG, T.ECHO, T.WELCOME):
            self.assertIsNone(render_frame(ftype, b"x", 1, True))

    def test_malformed_is_a_warning_not_a_crash(self):
        self.assertEqual(
            render_frame(T.MESSAGE, b"nonsense", 1, False),
            "! malformed MESSAGE frame from the server",
        )
        self.assertIn("malformed", render_frame(T.JOIN, b"x.y.z", 1, False))

    def test_out_of_range_colour_is_not_painted(self):
        self.assertEqual(render_frame(T.MESSAGE, b"2.999.bob.hi", 1, True), "bob: hi")

    def test_hostile_text_is_defused(self):
        line = render_frame(T.MESSAGE, b"2.33.bob.\x1b[2Jgone\xff", 1, False)
        self.assertNotIn("\x1b", line)
        self.assertEqual(safe(b"caf\xc3\xa9 \xf0\x9f\x98\x80"), "café 😀")

    def test_users_line(self):
        self.assertEqual(
            users_line([b"1.33.ann", b"2.40.bob"], False), "* 2 online: ann, bob"
        )
        self.assertEqual(users_line([b"1.33.ann", b"junk"], False), "* 1 online: ann")


class LineEditorTests(SynchronousTestCase):
    def test_typing_and_enter(self):
        editor = LineEditor("> ")
        self.assertEqual(editor.feed(b"hel"), [])
        self.assertEqual(editor.redraw(), CLEAR_LINE + "> hel")
        self.assertEqual(editor.feed(b"lo\rnext"), ["hello"])
        self.assertEqual(editor.buffer, "next")

    def test_editing_keys(self):
        editor = LineEditor()
        editor.feed(b"one two  \x17")
        self.assertEqual(editor.buffer, "one ")
        editor.feed(b"x\x7f\x7fy")
        self.assertEqual(editor.buffer, "oney")
        editor.feed(b"\x15z")
        self.assertEqual(editor.buffer, "z")

    def test_escape_sequences_and_utf8_split(self):
        editor = LineEditor()
        editor.feed(b"a\x1b[Db\x1bOAc\xc3")
        editor.feed(b"\xa9")
        self.assertEqual(editor.buffer, "abcé")

    def test_ctrl_c_and_ctrl_d(self):
        editor = LineEditor()
        self.assertEqual(editor.feed(b"\x04"), [Key.EOF])
        self.assertEqual(editor.feed(b"x\x04"), [])  # not on a non-empty line
        self.assertEqual(editor.feed(b"\x03"), [Key.INTERRUPT])

    def test_message_above_keeps_input(self):
        editor = LineEditor("> ")
        editor.feed(b"half")
        self.assertEqual(
            editor.above("bob: hi"), CLEAR_LINE + "bob: hi\r\n" + CLEAR_LINE + "> half"
        )

    def test_long_input_scrolls(self):
        editor = LineEditor("> ", width=20)
        editor.feed(b"x" * 50 + b"END")
        shown = editor.redraw()[len(CLEAR_LINE) :]
        self.assertEqual(len(shown), 19)
        self.assertTrue(shown.startswith("<") and shown.endswith("END"))


class AddressTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(parse_address("localhost"), ("localhost", 7777))
        self.assertEqual(parse_address("chat.example.org:80"), ("chat.example.org", 80))
        self.assertEqual(parse_address("[::1]:7000"), ("::1", 7000))
        self.assertEqual(parse_address("[::1]"), ("::1", 7777))
        self.assertEqual(parse_address("::1"), ("::1", 7777))

    def test_bad(self):
        for text in ("", ":7777", "host:0", "host:65536", "host:x", "[::1", "[::1]x"):
            self.assertRaises(UsageError, parse_address, text)


class DescribeFailureTests(SynchronousTestCase):
    def describe(self, exc, tls=True, heard=False):
        return describe_failure(Failure(exc), "host:1", tls, heard)

    def test_tls(self):
        self.assertIn(
            "not valid for that host name", self.describe(VerificationError(errors=[]))
        )
        bad = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertIn("not trusted", self.describe(bad))
        plain = SSL.Error([("SSL routines", "", "wrong version number")])
        self.assertEqual(
            self.describe(plain),
            "TLS handshake with host:1 failed (wrong version number): is it a TLS port?",
        )

    def test_tcp(self):
        self.assertIn(
            "connection refused", self.describe(error.ConnectionRefusedError())
        )
        self.assertIn("cannot resolve", self.describe(error.DNSLookupError()))
        self.assertIn("try --tls", self.describe(error.ConnectionDone(), tls=False))
        self.assertEqual(
            self.describe(error.ConnectionDone(), heard=True),
            "host:1 closed the connection",
        )
