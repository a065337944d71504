"""chatd-client's pure parts: commands, rendering, the line editor, addresses."""

from __future__ import annotations

import colorsys

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatd.client import commands as c
from chatd.client.connection import UsageError, parse_address
from chatd.client.lineedit import CLEAR_LINE, Key, LineEditor, text_width
from chatd.client.render import render_frame, safe, users_line
from chatd.core.roster import PALETTE
from chatd.netutil import describe_failure
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
        editor.feed(b"a\x1b[1;5Db\x1b[15~c\x1bxd\xc3")  # Ctrl-Left, F5, Alt-x
        editor.feed(b"\xa9")
        self.assertEqual(editor.buffer, "abcdé")

    def test_cursor_keys(self):
        """Left/Right, Home/End (both spellings), Delete, insert mid-line."""
        editor = LineEditor("> ")
        editor.feed(b"helo\x1b[D")
        editor.feed(b"l")
        self.assertEqual((editor.buffer, editor.cursor), ("hello", 4))
        editor.feed(b"\x1b[H[\x1bOF]\x1b[1~\x1b[3~\x01X")
        self.assertEqual(editor.buffer, "Xhello]")
        editor.feed(b"\x1b[4~\x1b[D\x1b[D\x0b")  # End, Left, Left, Ctrl-K
        self.assertEqual(editor.buffer, "Xhell")
        editor.feed(b"\x1b[D\x1b[D\x15")  # Ctrl-U kills up to the cursor
        self.assertEqual((editor.buffer, editor.cursor), ("ll", 0))
        editor.feed(b"\x1b[C\x04")  # Ctrl-D mid-line deletes, is not EOF
        self.assertEqual(editor.buffer, "l")
        # The cursor is put back after redrawing: 3 columns left of the end.
        editor.feed(b"\x1b[Dab")
        self.assertEqual(editor.redraw(), CLEAR_LINE + "> abl\x1b[1D")

    def test_history(self):
        editor = LineEditor()
        self.assertEqual(editor.feed(b"one\rtwo\rtwo\r"), ["one", "two", "two"])
        editor.feed(b"draft\x1b[A")
        self.assertEqual(editor.buffer, "two")  # a repeated line is kept once
        editor.feed(b"\x1b[A\x1b[A")
        self.assertEqual(editor.buffer, "one")
        editor.feed(b"\x1b[B\x1b[B")
        self.assertEqual(editor.buffer, "draft")
        editor.feed(b"\x1b[A!\r")
        self.assertEqual(editor.history, ["one", "two", "two!"])

    def test_secret_input_is_not_shown_or_kept(self):
        editor = LineEditor("Password: ")
        editor.secret = True
        editor.feed(b"hunter2")
        self.assertEqual(editor.redraw(), CLEAR_LINE + "Password: ")
        self.assertEqual(editor.feed(b"\r"), ["hunter2"])
        self.assertEqual(editor.history, [])

    def test_wide_characters_fit_the_row(self):
        """CJK takes two columns: the row never reaches the last column."""
        editor = LineEditor("> ", width=20)
        editor.feed("日本語のテキスト入力".encode())  # 10 characters, 20 columns
        shown = editor.redraw()[len(CLEAR_LINE) :]
        self.assertLessEqual(text_width(shown), 19)
        self.assertTrue(shown.startswith("<") and shown.endswith("入力"))
        editor.feed(b"\x01")  # Home: the start comes back into view
        shown = editor.redraw()[len(CLEAR_LINE) :]
        self.assertTrue(shown.startswith("> 日本語"), shown)
        self.assertLessEqual(text_width(shown.split("\x1b")[0]), 19)

    def test_combining_marks_move_with_their_letter(self):
        editor = LineEditor("> ", width=20)
        editor.feed("cafe\u0301!".encode())
        self.assertEqual(editor.redraw(), CLEAR_LINE + "> cafe\u0301!")
        editor.feed(b"\x1b[D\x1b[D")  # over "!" then over "é" (two code points)
        self.assertEqual(editor.cursor, 3)
        self.assertEqual(editor.redraw(), CLEAR_LINE + "> cafe\u0301!\x1b[2D")
        editor.feed(b"\x1b[C\x7f")  # Backspace takes the accent with its letter
        self.assertEqual(editor.buffer, "caf!")
        self.assertEqual(text_width("e\u0301"), 1)

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


class PaletteTests(SynchronousTestCase):
    """The first users the server colours get clearly different hues."""

    @staticmethod
    def hue(index: int) -> float:
        levels = (0, 95, 135, 175, 215, 255)
        i = index - 16
        rgb = (levels[i // 36] / 255, levels[i // 6 % 6] / 255, levels[i % 6] / 255)
        return colorsys.rgb_to_hsv(*rgb)[0] * 360

    def apart(self, a: int, b: int) -> float:
        d = abs(self.hue(a) - self.hue(b)) % 360
        return min(d, 360 - d)

    def test_first_users_are_distinct(self):
        self.assertGreaterEqual(self.apart(PALETTE[0], PALETTE[1]), 60)
        first = PALETTE[:6]
        for i, a in enumerate(first):
            for b in first[:i]:
                self.assertGreaterEqual(self.apart(a, b), 25, (a, b))

    def test_same_readable_colours(self):
        self.assertEqual(
            sorted(PALETTE),
            sorted((33, 37, 40, 43, 64, 69, 70, 99, 105, 128, 130, 133, 136, 161,
                    166, 169, 172, 178, 196, 202, 208, 27, 34, 125)),
        )  # fmt: skip


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
