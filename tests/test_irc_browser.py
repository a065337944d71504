"""An IRC user, a browser user and a TCP user in two rooms of one real
twistd: each sees the others' lines of ``dev`` in one order, and nothing of
``dev`` in the lobby (the IRC front end's end-to-end check with the page,
in headless Chromium: tests/browser.py)."""

from __future__ import annotations

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.browser import BrowserCase
from tests.contract import LOOPBACK
from tests.ircclient import registered
from tests.test_web_rooms_browser import expect
from tests.webclient import webDaemon, webPort


class IrcBrowserTests(BrowserCase):
    @defer.inlineCallbacks
    def test_irc_browser_and_tcp_users_in_two_rooms(self):
        daemon = webDaemon("--stats-interval", "0", "--irc", LOOPBACK)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.web = webPort(daemon)
        term = yield self._terminal(daemon.port)
        ann = yield registered(daemon.ports("irc")[0], b"ann")
        self.addCleanup(ann.transport.abortConnection)
        alice = yield self.browser()
        yield self.run_(alice.join, "alice")
        yield self.run_(alice.say, "/join dev")
        yield self.run_(alice.waitShown, "#room-name", "dev")
        ann.send(b"JOIN #dev")
        yield ann.until(lambda x: x.endswith(b"#dev :End of /NAMES list"))
        term.send(T.ENTER, b"dev")
        yield expect(term, T.ROOM_JOIN, b".term")
        yield self.run_(alice.waitText, "#who", "term")

        # One line from each front end, in this order: everyone sees the
        # others' in it (the IRC user gets no copy of its own).
        term.send(T.ROOM_SAY, b"dev.one from tcp")
        yield expect(term, T.ROOM_MESSAGE, b".one from tcp")
        ann.send(b"PRIVMSG #dev :two from irc")
        yield expect(term, T.ROOM_MESSAGE, b".two from irc")
        yield self.run_(alice.say, "three from the browser")
        yield expect(term, T.ROOM_MESSAGE, b".three from the browser")
        yield self.run_(alice.waitText, "#log", "three from the browser")
        self.assertEqual(
            (yield self.run_(alice.lines)),
            [
                "term: one from tcp",
                "ann: two from irc",
                "alice (you): three from the browser",
            ],
        )
        seen = yield ann.until(lambda x: x.endswith(b"three from the browser"))
        said = [x for x in seen if b" PRIVMSG #dev :" in x]
        self.assertEqual(
            said,
            [b":term!term@chatd PRIVMSG #dev :one from tcp",
             b":alice!alice@chatd PRIVMSG #dev :three from the browser"],
        )  # fmt: skip
        # The lobby: a line there reaches the IRC user in #lobby, not #dev.
        term.send(T.SAY, b"lobby line")
        got = yield ann.until(lambda x: x.endswith(b"lobby line"))
        self.assertEqual(got[-1], b":term!term@chatd PRIVMSG #lobby :lobby line")

    @defer.inlineCallbacks
    def _terminal(self, port: int):  # type: ignore[no-untyped-def]
        from tests.test_web_rooms_browser import RoomBrowserTests

        return (yield RoomBrowserTests.terminal(self, port))[0]  # type: ignore[arg-type]
