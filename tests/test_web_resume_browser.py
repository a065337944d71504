"""History and resume (protocol 1.2) on the page, in headless Chromium
(tests/browser.py).

A browser user's WebSocket is dropped while a TCP user says three things:
the page resumes the session (RESUME, SINCE, READY), shows each of the
three once and says how many it missed, and the TCP user never sees the
browser user leave or come back.  A page entering a room is shown the
room's last lines, marked as history, before the live ones, and none twice.
A token the server does not know (BAD_TOKEN) is said so, and the page
joins afresh under the same name.
"""

from __future__ import annotations

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.browser import BrowserCase
from tests.daemon import FrameClient

#: Run in the page before it connects: every WebSocket it opens is kept in
#: ``window.sockets``, and while ``window.hold`` is set a new one asks for
#: a path the server refuses (404; the page's CSP allows only its own
#: origin), so the page cannot reconnect until the test lets it.  The page's
#: own code is unchanged.
HOLD = """
const Real = WebSocket;
window.sockets = [];
window.hold = false;
window.WebSocket = class extends Real {
  constructor(url, protocols) {
    super(window.hold ? url.replace(/\\/ws$/, "/held") : url, protocols);
    window.sockets.push(this);
  }
};
"""

#: Run in the page before it connects: a RESUME it sends carries a token
#: the server never gave (32 ``A``), as a stale one would.
FORGE = """
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (new DataView(data.buffer).getUint32(0) === 32) {
    data = new Uint8Array(8 + 32).fill(0x41);
    new DataView(data.buffer).setUint32(0, 32);
    new DataView(data.buffer).setUint32(4, 32);
  }
  return send.call(this, data);
};
"""

#: The lines of the log shown: [className, text] each.
LOG = (
    "return [...document.querySelectorAll('#log li')]"
    ".map((li) => [li.className, li.innerText])"
)


@defer.inlineCallbacks
def until(client: FrameClient, ftype: int, end: bytes = b""):  # type: ignore[no-untyped-def]
    """Every frame ``client`` gets up to the first ``ftype`` frame ending
    with ``end``, that one included."""
    got = []
    while True:
        frame = yield client.next()
        got.append(frame)
        if frame[0] == ftype and frame[1].endswith(end):
            return got


class ResumeBrowserTests(BrowserCase):
    @defer.inlineCallbacks
    def test_a_dropped_websocket_is_resumed(self):
        daemon = yield self.daemon()
        term, _ = yield self.terminal(daemon.port)
        alice = yield self.browser()
        yield self.run_(alice.script, HOLD)
        yield self.run_(alice.join, "alice")
        yield until(term, T.JOIN, b".alice")
        term.send(T.SAY, b"before")
        yield until(term, T.MESSAGE, b".term.before")
        yield self.run_(alice.waitText, "#log", "term: before")

        # The socket goes (the server keeps alice, detached); the page
        # cannot reconnect while term talks.
        yield self.run_(
            alice.script, "window.hold = true; window.sockets.at(-1).close();"
        )
        yield daemon.waitForLog("detach conn=")
        yield self.run_(alice.waitText, "#status", "connection lost")
        yield self.run_(alice.until, "return window.sockets.length >= 2")  # refused
        seen = []
        for text in (b"one", b"two", b"three"):
            term.send(T.SAY, text)
            seen += yield until(term, T.MESSAGE, b".term." + text)

        # Let it: it resumes and is shown the three, once each.
        yield self.run_(alice.script, "window.hold = false;")
        yield self.run_(
            alice.waitText, "#log", "reconnected, 3 missed messages delivered"
        )
        yield self.run_(alice.waitText, "#status", "reconnected as alice")
        term.send(T.SAY, b"after")
        seen += yield until(term, T.MESSAGE, b".term.after")
        yield self.run_(alice.waitText, "#log", "term: after")
        self.assertEqual(
            (yield self.run_(alice.lines)),
            ["term: before", "term: one", "term: two", "term: three", "term: after"],
        )
        texts = [text for _, text in (yield self.run_(alice.script, LOG))]
        self.assertEqual(texts.count("reconnected, 3 missed messages delivered"), 1)
        self.assertEqual(sum("You joined as" in t for t in texts), 1)
        self.assertEqual((yield self.run_(alice.lines, "error")), [])

        # A resume, not a new session: term saw alice neither go nor come
        # back, she is still here, and the server says so too.
        term.send(T.PING, b"end")
        seen += yield until(term, T.PONG, b"end")
        types = [ftype for ftype, _ in seen]
        self.assertNotIn(T.LEAVE, types)
        self.assertNotIn(T.JOIN, types)
        term.send(T.WHO)
        users = yield until(term, T.USERS, b"")
        self.assertIn(b"alice", users[-1][1])
        yield self.run_(alice.waitText, "#who", "term")
        self.assertIn("resume conn=", daemon.log)
        self.assertNotIn("leave conn=", daemon.log.split("detach conn=")[1])
        sockets = yield self.run_(alice.script, "return window.sockets.length")
        self.assertGreaterEqual(sockets, 3)  # the first, a refused one, the resumed
        # The token is in a variable only.
        stored = yield self.run_(
            alice.script, "return localStorage.length + sessionStorage.length"
        )
        self.assertEqual(stored, 0)

        # What alice says after the resume reaches term.
        yield self.run_(alice.say, "back again")
        yield until(term, T.MESSAGE, b".alice.back again")

    @defer.inlineCallbacks
    def test_history_shown_on_entering_a_room(self):
        daemon = yield self.daemon()
        term, _ = yield self.terminal(daemon.port)
        term.send(T.SAY, b"said before")
        yield until(term, T.MESSAGE, b".term.said before")
        term.send(T.ENTER, b"dev")
        yield until(term, T.ROOM_JOIN, b".term")
        for text in (b"one", b"two"):
            term.send(T.ROOM_SAY, b"dev." + text)
            yield until(term, T.ROOM_MESSAGE, b".term." + text)

        # The lobby's history, before alice's own JOIN (which the history
        # also holds, and which is not shown twice).
        alice = yield self.browser()
        yield self.run_(alice.join, "alice")
        yield self.run_(alice.waitText, "#log", "term: said before")
        self.assertEqual(
            (yield self.run_(alice.script, LOG)),
            [
                ["event history", "→ term joined"],
                ["message history", "term: said before"],
                ["event", "You joined as alice."],
            ],
        )

        # dev's, on entering it; then a live line after them.
        yield self.run_(alice.say, "/join dev")
        yield self.run_(alice.waitShown, "#room-name", "dev")
        yield self.run_(alice.waitText, "#log", "term: two")
        term.send(T.ROOM_SAY, b"dev.three")
        yield self.run_(alice.waitText, "#log", "term: three")
        self.assertEqual(
            (yield self.run_(alice.script, LOG)),
            [
                ["event history", "→ term joined"],
                ["message history", "term: one"],
                ["message history", "term: two"],
                ["event", "You joined dev."],
                ["message", "term: three"],
            ],
        )
        # History is not news: no unread mark on the lobby.
        self.assertIsNone(
            (yield self.run_(alice.shown, '#rooms button[data-room=""] .unread'))
        )

    @defer.inlineCallbacks
    def test_a_token_that_resumes_nothing_starts_afresh(self):
        # A short window: the dropped session holds the name for 3 s.
        daemon = yield self.daemon("--resume-window", "3")
        term, _ = yield self.terminal(daemon.port)
        alice = yield self.browser()
        yield self.run_(alice.script, HOLD)  # for window.sockets
        yield self.run_(alice.script, FORGE)
        yield self.run_(alice.join, "alice")
        yield until(term, T.JOIN, b".alice")
        yield self.run_(alice.script, "window.sockets.at(-1).close();")
        error = yield self.run_(alice.waitText, "#log li.error", "BAD_TOKEN")
        self.assertEqual(error, "BAD_TOKEN: could not resume; joining again as alice.")
        # Once the window ends (term sees alice leave), a fresh HELLO gets
        # the name back: a new session, with a JOIN.
        left = yield until(term, T.LEAVE, b".alice.error")
        self.assertNotIn(T.JOIN, [t for t, _ in left])
        yield until(term, T.JOIN, b".alice")  # after NAME_TAKEN and retries
        yield self.run_(alice.waitText, "#status", "reconnected as alice")
        self.assertNotIn("missed messages", (yield self.run_(alice.shown, "#log")))
