"""The page in a real browser: headless Chromium (Debian's) driven by Selenium.

Two browser users and one TCP user chat through a real ``twistd chatd --web``.
Selenium calls block, so they run in a thread (``deferToThread``) while the
reactor keeps the TCP user and the daemon's output going.  Skipped, saying
why, only where Chromium, its driver or Selenium is missing; the README's
test command installs them.

``CHATD_WEB_SCREENSHOT=docs/web.png`` also saves the screenshot for the docs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, threads
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import Daemon, connect
from tests.webclient import webDaemon, webPort

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
)
WAIT = 15  # seconds for the page to show something: a bound, not a pause

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None


def _missing() -> str | None:
    if webdriver is None:
        return "selenium is not installed (pip install '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install -y chromium chromium-driver)"
    return None


class Browser:
    """One headless Chromium on the chat page; every method blocks (thread)."""

    def __init__(self, url: str, width: int = 1000, height: int = 640) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        self.profile = tempfile.mkdtemp(prefix="chatd-chromium-")
        options.add_argument(f"--user-data-dir={self.profile}")
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.get(url)
        self.wait = WebDriverWait(self.driver, WAIT)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def find(self, css: str):  # type: ignore[no-untyped-def]
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def type(self, css: str, text: str) -> None:
        """Keyboard only: type into the field and press Enter."""
        field = self.find(css)
        field.clear()
        field.send_keys(text, Keys.ENTER)

    def join(self, name: str) -> None:
        assert not self.find("#chat").is_displayed(), "chat shown before joining"
        self.type("#name", name)
        self.wait.until(lambda d: self.find("#chat").is_displayed())
        assert not self.find("#login").is_displayed(), "name prompt still shown"
        self.waitText("#who", name)

    def waitText(self, css: str, text: str) -> str:
        """Wait until ``css`` shows ``text``; returns what it shows."""
        self.wait.until(lambda d: text in self.find(css).text)
        return self.find(css).text

    def say(self, line: str) -> None:
        self.type("#line", line)

    def lines(self, kind: str = "message") -> list[str]:
        return [
            li.text
            for li in self.driver.find_elements(By.CSS_SELECTOR, f"#log li.{kind}")
        ]

    def script(self, js: str):  # type: ignore[no-untyped-def]
        return self.driver.execute_script(js)


class BrowserTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        why = _missing()
        if why:
            raise unittest.SkipTest(why)

    @defer.inlineCallbacks
    def browser(self, width: int = 1000, height: int = 640):
        url = f"http://127.0.0.1:{self.web}/"
        b = yield threads.deferToThread(Browser, url, width, height)
        self.addCleanup(threads.deferToThread, b.quit)
        return b

    def run_(self, f, *args):  # type: ignore[no-untyped-def]
        return threads.deferToThread(f, *args)

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
