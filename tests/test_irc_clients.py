"""Real IRC clients against a real twistd: irssi (Debian's) driven in tmux,
and a bot built on the ``irc`` package from PyPI, each in a room with a
native TCP user.

irssi's screen is read with ``tmux capture-pane`` until the line is there
(bounded: nothing tells a test when a terminal program has drawn).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from twisted.internet import defer, reactor, task, threads, utils
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.contract import LOOPBACK
from tests.contractcase import ContractHelpers

IRSSI, TMUX = shutil.which("irssi"), shutil.which("tmux")


class RealClientTests(ContractHelpers, unittest.TestCase):
    mode = "single"
    timeout = 60

    @defer.inlineCallbacks
    def room(self):  # type: ignore[no-untyped-def]
        """A daemon with --irc, and bob (TCP, 1.2) in room dev."""
        deployment = yield self.deploy("--irc", LOOPBACK)
        [(bob, bentry)] = yield self.users(b"bob")
        bob.send(T.VERSION, b"1.2")
        yield self.expect(bob, T.VERSION)
        bob.send(T.ENTER, b"dev")
        yield self.expect(bob, T.ROOM_JOIN)
        return deployment.daemons[0].ports("irc")[0], bob

    @defer.inlineCallbacks
    def nextInRoom(self, bob, ftype: int):  # type: ignore[no-untyped-def]
        """bob's next frame of ``ftype``, past lobby JOINs and the like."""
        while True:
            got, payload = yield bob.next()
            if got == ftype:
                return payload

    @defer.inlineCallbacks
    def test_a_bot_on_the_irc_package(self):
        port, bob = yield self.room()
        heard: list[str] = []
        bot = threads.deferToThread(runBot, port, heard)
        said = yield self.nextInRoom(bob, T.ROOM_MESSAGE)
        self.assertTrue(said.endswith(b".bot.hello from a bot"), said)
        bob.send(T.ROOM_SAY, b"dev.hi bot")
        yield bot
        self.assertIn("bob: hi bot", heard)

    @defer.inlineCallbacks
    def test_irssi_in_tmux(self):
        if not (IRSSI and TMUX):
            raise unittest.SkipTest(
                "irssi and tmux are not installed (apt-get install -y irssi tmux)"
            )
        port, bob = yield self.room()
        home = tempfile.mkdtemp(prefix="chatd-irssi-")
        self.addCleanup(shutil.rmtree, home, True)
        sock = os.path.join(home, "tmux.sock")
        tmux = [TMUX, "-S", sock]
        self.addCleanup(lambda: utils.getProcessValue(TMUX, tmux[1:] + ["kill-server"]))
        yield utils.getProcessValue(
            TMUX,
            tmux[1:] + ["new-session", "-d", "-x", "160", "-y", "40",
                        f"{IRSSI} --home={home} -n ann -c 127.0.0.1 -p {port}"],
            env={"TERM": "xterm", "HOME": home, "PATH": os.environ.get("PATH", "")},
        )  # fmt: skip

        def keys(*words: str) -> defer.Deferred:
            return utils.getProcessValue(TMUX, tmux[1:] + ["send-keys", *words])

        @defer.inlineCallbacks
        def screenShows(text: str):  # type: ignore[no-untyped-def]
            deadline, shown = time.monotonic() + 20, b""
            while time.monotonic() < deadline:
                shown = yield utils.getProcessOutput(
                    TMUX, tmux[1:] + ["capture-pane", "-p"]
                )
                if text.encode() in shown:
                    return shown
                yield task.deferLater(reactor, 0.1, lambda: None)
            self.fail(f"irssi never showed {text!r}; its screen:\n{shown.decode()}")

        yield screenShows("MOTD File is missing")  # registered (then in #lobby)
        yield keys("/join #dev", "Enter")
        joined = yield self.nextInRoom(bob, T.ROOM_JOIN)
        self.assertTrue(joined.endswith(b".ann"), joined)
        yield keys("hello from irssi", "Enter")
        said = yield self.nextInRoom(bob, T.ROOM_MESSAGE)
        self.assertTrue(said.endswith(b".ann.hello from irssi"), said)
        bob.send(T.ROOM_SAY, b"dev.hi irssi")
        yield screenShows("hi irssi")
        yield keys("/quit", "Enter")
        left = yield self.nextInRoom(bob, T.LEAVE)
        self.assertTrue(left.endswith(b".ann.quit"), left)


def runBot(port: int, heard: list[str]) -> None:
    """A bot on the ``irc`` package: join #dev, say hello, wait for bob."""
    import irc.client

    loop = irc.client.Reactor()
    conn = loop.server().connect("127.0.0.1", port, "bot")
    done: list[bool] = []

    def welcome(c, event) -> None:  # type: ignore[no-untyped-def]
        c.join("#dev")

    def joined(c, event) -> None:  # type: ignore[no-untyped-def]
        if event.source.nick == "bot" and event.target == "#dev":
            c.privmsg("#dev", "hello from a bot")

    def pubmsg(c, event) -> None:  # type: ignore[no-untyped-def]
        heard.append(f"{event.source.nick}: {event.arguments[0]}")
        if event.arguments[0] == "hi bot":
            done.append(True)

    loop.add_global_handler("welcome", welcome)
    loop.add_global_handler("join", joined)
    loop.add_global_handler("pubmsg", pubmsg)
    deadline = time.monotonic() + 20
    try:
        while not done and time.monotonic() < deadline:
            loop.process_once(0.1)
    finally:
        conn.disconnect("bye")
