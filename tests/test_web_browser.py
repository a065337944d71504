"""The page in a real browser: headless Chromium (Debian's) driven by Selenium.

Two browser users and one TCP user chat through a real ``twistd chatd --web``
(the browser helpers: tests/browser.py).

``CHATD_WEB_SCREENSHOT=docs/web.png`` also saves the screenshot for the docs.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.browser import BrowserCase
from tests.daemon import Daemon, connect
from tests.webclient import webDaemon, webPort


class BrowserTests(BrowserCase):
    @defer.inlineCallbacks
    def test_two_browsers_and_a_terminal_chat(self):
        daemon = webDaemon("--stats-interval", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.web = webPort(daemon)

        term = yield connect(daemon.port)
        self.addCleanup(term.transport.abortConnection)
        term.send(T.HELLO, b"term")
        self.assertEqual((yield term.next())[0], T.WELCOME)
        term.send(T.READY)
        self.assertEqual((yield term.next())[0], T.JOIN)

        alice = yield self.browser()
        bob = yield self.browser(390, 844)  # phone-sized

        # A name with markup is refused, and the error shown as text; a
        # taken one too (case-insensitively); then a good one.
        yield self.run_(alice.type, "#name", "<img src=x>")
        error = yield self.run_(alice.waitText, "#name-error", "BAD_NAME")
        self.assertIn("BAD_NAME", error)
        yield self.run_(alice.type, "#name", "TERM")
        error = yield self.run_(alice.waitText, "#name-error", "NAME_TAKEN")
        self.assertTrue(error.startswith("NAME_TAKEN: "), error)
        yield self.run_(alice.join, "alice")
        yield self.run_(bob.join, "bob")
        who = yield self.run_(alice.waitText, "#who", "bob")
        self.assertEqual(who.split(), ["term", "alice", "(you)", "bob"])

        # Markup and script in chat are shown as text, never run.
        evil = '<b>bold</b> <script>window.pwned = 1</script> <img src=x onerror="window.pwned=2">'
        yield self.run_(alice.say, evil)
        yield self.run_(bob.waitText, "#log", "window.pwned = 1")
        term.send(T.SAY, b"from the terminal")
        yield self.run_(bob.say, "from a phone")
        for b in (alice, bob):
            yield self.run_(b.waitText, "#log", "from a phone")
            yield self.run_(b.waitText, "#log", "from the terminal")
            self.assertIsNone((yield self.run_(b.script, "return window.pwned")))
            count = yield self.run_(
                b.script,
                "return document.querySelectorAll('#log b, #log img, #log script').length",
            )
            self.assertEqual(count, 0)

        # One order for all three.
        seen = []
        while len(seen) < 3:  # after JOIN alice and JOIN bob
            ftype, payload = yield term.next()
            if ftype == T.MESSAGE:
                seen.append(payload.decode().split(".", 3)[3])
        linesA = yield self.run_(alice.lines)
        linesB = yield self.run_(bob.lines)
        texts = [line.split(": ", 1)[1] for line in linesA]
        self.assertEqual(texts, seen)
        self.assertEqual([line.split(": ", 1)[1] for line in linesB], texts)
        own = yield self.run_(alice.lines, "own")
        self.assertEqual(len(own), 1)
        self.assertIn("(you)", own[0])

        # A whisper: only its target sees it, set apart; the sender sees its copy.
        yield self.run_(bob.say, "/msg alice just between us")
        got = yield self.run_(alice.waitText, "#log li.whisper", "just between us")
        self.assertEqual(got, "(private) bob: just between us")
        mine = yield self.run_(bob.lines, "whisper")
        self.assertEqual(mine, ["(private to alice) bob (you): just between us"])
        term.send(T.ECHO, b"sync")
        self.assertEqual((yield term.next()), (T.ECHO, b"sync"))  # no WHISPERED first

        # The phone-sized page keeps the input in view, the list above it.
        inner, right = yield self.run_(
            bob.script,
            "return [window.innerWidth,"
            " document.querySelector('#say button').getBoundingClientRect().right]",
        )
        self.assertLessEqual(inner, 600, "not a phone-sized window")
        self.assertLessEqual(right, inner)

        png = yield self.run_(alice.driver.get_screenshot_as_png)
        self.assertTrue(png.startswith(b"\x89PNG"))
        target = os.environ.get("CHATD_WEB_SCREENSHOT")
        if target:
            Path(target).write_bytes(png)

        # The server goes away: the page says so and that it will reconnect.
        yield daemon.stop()
        yield self.run_(alice.waitText, "#log", "SHUTDOWN: ")
        status = yield self.run_(alice.waitText, "#status", "reconnecting in")
        self.assertIn("connection lost", status)

        # The daemon comes back on the same port: the page reconnects on its
        # own, as the same name, and chats on.
        again = Daemon(
            "--web", f"tcp:{self.web}:interface=127.0.0.1", "--stats-interval", "0"
        )
        self.addCleanup(again.stop)
        yield again.start()
        status = yield self.run_(alice.waitText, "#status", "reconnected as")
        self.assertIn("alice", status)
