"""Resume on the page, in headless Chromium (tests/browser.py): the page's
WebSocket drops, a TCP user says three things meanwhile, and the page
resumes (docs/protocol.md, "History and resume") with each of them shown
once, says so, and the TCP user never sees it leave or come back."""

from __future__ import annotations

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.browser import BrowserCase
from tests.daemon import connect, refusingPort
from tests.webclient import webDaemon, webPort

#: Run in the page before it connects: keep every WebSocket it opens, so
#: the test can drop one as a network would, and while ``__hold`` is set
#: aim new ones at a port that refuses (arguments[0]), so the page cannot
#: come back before the test lets it.
KEEP_SOCKETS = """
const Real = window.WebSocket;
const refusing = `ws://127.0.0.1:${arguments[0]}/`;
window.__sockets = [];
window.__hold = false;
window.WebSocket = function (url, ...rest) {
  const ws = new Real(window.__hold ? refusing : url, ...rest);
  window.__sockets.push(ws);
  return ws;
};
window.WebSocket.prototype = Real.prototype;
Object.assign(window.WebSocket, { OPEN: 1, CLOSED: 3, CONNECTING: 0, CLOSING: 2 });
"""

RECONNECTED = (
    "return [...document.querySelectorAll('#log li')].some("
    "(li) => li.textContent.includes('reconnected, 3 missed messages delivered'))"
)


class ResumePageTests(BrowserCase):
    @defer.inlineCallbacks
    def test_a_dropped_page_resumes_with_what_it_missed(self):
        daemon = webDaemon("--stats-interval", "0", "--idle-timeout", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.web = webPort(daemon)
        term = yield connect(daemon.port)
        self.addCleanup(term.transport.abortConnection)
        term.send(T.HELLO, b"term")
        term.send(T.READY)
        self.assertEqual((yield term.next())[0], T.WELCOME)
        self.assertEqual((yield term.next())[0], T.JOIN)
        alice = yield self.browser()
        yield self.run_(alice.script, KEEP_SOCKETS, refusingPort(self))
        yield self.run_(alice.join, "alice")
        ftype, payload = yield term.next()
        self.assertEqual((ftype, payload.split(b".")[2]), (T.JOIN, b"alice"))
        yield self.run_(alice.waitText, "#status", "connected as")
        yield self.run_(
            alice.script, "window.__hold = true; window.__sockets.at(-1).close()"
        )
        yield daemon.waitForLog("detach conn=")
        for text in (b"one", b"two", b"three"):
            term.send(T.SAY, text)
            ftype, payload = yield term.next()  # its own copy: sequenced
            self.assertEqual((ftype, payload.rsplit(b".", 1)[1]), (T.MESSAGE, text))
        yield self.run_(alice.script, "window.__hold = false")
        yield self.run_(alice.until, RECONNECTED)
        shown = yield self.run_(alice.lines)
        for text in ("one", "two", "three"):
            self.assertEqual(sum(line.endswith(text) for line in shown), 1, shown)
        term.send(T.PING, b"end")
        while True:
            ftype, payload = yield term.next()
            if ftype == T.PONG:
                break
            self.assertNotIn(ftype, (T.LEAVE, T.JOIN), payload)
        self.assertIn("resume conn=", daemon.log)
        self.assertNotIn("leave conn=", daemon.log.split("detach conn=")[1])
