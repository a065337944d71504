"""Headless Chromium (Debian's) on the chat page, driven by Selenium.

Selenium calls block, so tests run them in a thread (``deferToThread``)
while the reactor keeps TCP users and the daemon's output going.  Tests
are skipped, saying why, only where Chromium, its driver or Selenium is
missing; the README's test command installs them.  Every wait is a bounded
poll of the page (``WebDriverWait``), never a sleep.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, threads
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import connect
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
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None


def missing() -> str | None:
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

    def script(self, js: str, *args: object):  # type: ignore[no-untyped-def]
        return self.driver.execute_script(js, *args)

    def click(self, css: str) -> None:
        """Click ``css`` once it is there (retried if the page redrew it)."""

        def clicked(driver: object) -> bool:
            self.find(css).click()
            return True

        WebDriverWait(
            self.driver,
            WAIT,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(clicked)

    def shown(self, css: str) -> str | None:
        """The text ``css`` shows now (None: not on the page), read in one go
        so that a redrawn element cannot go stale in between."""
        return self.script(
            "const e = document.querySelector(arguments[0]);"
            " return e === null ? null : e.innerText;",
            css,
        )

    def waitShown(self, css: str, text: str | None) -> None:
        """Wait until ``css`` shows exactly ``text`` (None: is gone)."""
        self.wait.until(lambda d: self.shown(css) == text)

    def until(self, js: str, *args: object):  # type: ignore[no-untyped-def]
        """Wait until the script ``js`` returns something true; returns it."""
        return self.wait.until(lambda d: self.script(js, *args))


class BrowserCase(unittest.TestCase):
    """Runs Browser calls in threads; ``self.web`` is the page's port."""

    timeout = 120
    web: int

    def setUp(self) -> None:
        why = missing()
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
    def daemon(self, *options: str):  # type: ignore[no-untyped-def]
        """A daemon with --web (and the defaults of history and resume
        unless ``options`` say otherwise); ``self.web`` is its page's port."""
        daemon = webDaemon("--stats-interval", "0", *options)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.web = webPort(daemon)
        return daemon

    @defer.inlineCallbacks
    def terminal(self, port: int):  # type: ignore[no-untyped-def]
        """A TCP user, ``term``, that asked for 1.2 (no numbers), ACTIVE:
        (client, its ``id.color.name``)."""
        term = yield connect(port)
        self.addCleanup(term.transport.abortConnection)
        term.send(T.VERSION, b"1.2")
        term.send(T.HELLO, b"term")
        self.assertEqual((yield term.next()), (T.VERSION, b"1.2"))
        ftype, welcome = yield term.next()
        self.assertEqual(ftype, T.WELCOME)
        name, uid, color = welcome.split(b".")
        term.send(T.READY)
        self.assertEqual((yield term.next())[0], T.JOIN)
        return term, b"%s.%s.%s" % (uid, color, name)
