"""End to end: a real ``twistd chatd --web``, WebSocket and TCP users together."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from chatd.wire import HEADER
from chatd.wire import FrameType as T
from tests.daemon import connect, sayUntilLeave
from tests.webclient import connectRaw, connectWS, webDaemon, webPort


class WebCase(unittest.TestCase):
    """A daemon with --web (``options`` added); helpers for users."""

    timeout = 60
    options: tuple[str, ...] = ()

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = webDaemon("--stats-interval", "0", *self.options)
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
        self.web = webPort(self.daemon)

    @defer.inlineCallbacks
    def handshake(self, client, name):
        client.send(T.HELLO, name)
        ftype, payload = yield client.next()
        self.assertEqual(ftype, T.WELCOME, payload)
        client.send(T.READY)
        ftype, join = yield client.next()
        self.assertEqual(ftype, T.JOIN)
        return join

    @defer.inlineCallbacks
    def wsUser(self, name):
        client = yield connectWS(self.web)
        self.addCleanup(lambda: client.transport.transport.abortConnection())
        join = yield self.handshake(client, name)
        return client, join

    @defer.inlineCallbacks
    def tcpUser(self, name):
        client = yield connect(self.daemon.port)
        self.addCleanup(client.transport.abortConnection)
        join = yield self.handshake(client, name)
        return client, join

    @defer.inlineCallbacks
    def frames(self, client, n):
        got = []
        for _ in range(n):
            got.append((yield client.next()))
        return got


class WebTests(WebCase):
    @defer.inlineCallbacks
    def test_browser_and_terminal_users_share_one_order(self):
        """WebSocket and TCP users see the same JOINs and MESSAGEs in the
        same order, and whisper to each other."""
        web, wjoin = yield self.wsUser(b"webby")
        tcp, tjoin = yield self.tcpUser(b"term")
        self.assertEqual((yield web.next()), (T.JOIN, tjoin))
        for i in range(20):
            (web if i % 2 else tcp).send(T.SAY, b"line %d" % i)
        seenWeb = yield self.frames(web, 20)
        seenTcp = yield self.frames(tcp, 20)
        self.assertEqual(seenWeb, seenTcp)
        self.assertEqual({t for t, _ in seenWeb}, {T.MESSAGE})
        self.assertEqual(
            sorted(p.rsplit(b".", 1)[1] for _, p in seenWeb),
            sorted(b"line %d" % i for i in range(20)),
        )
        web.send(T.WHISPER, b"term.psst")
        self.assertEqual((yield tcp.next()), (T.WHISPERED, wjoin + b".psst"))
        tcp.send(T.WHISPER, b"WEBBY.back")
        self.assertEqual((yield web.next()), (T.WHISPERED, tjoin + b".back"))
        web.send(T.WHO)
        users = yield self.frames(web, 2)
        self.assertEqual(users, [(T.USERS, wjoin + b"\n" + tjoin), (T.USERS, b"")])
        web.send(T.BYE)
        ftype, leave = yield tcp.next()
        self.assertEqual((ftype, leave), (T.LEAVE, wjoin + b".quit"))
        yield web.closed

    @defer.inlineCallbacks
    def test_errors_as_over_tcp(self):
        """NAME_TAKEN across front ends, then TOO_LONG; the connection stays."""
        tcp, _ = yield self.tcpUser(b"taken")
        web = yield connectWS(self.web)
        self.addCleanup(lambda: web.transport.transport.abortConnection())
        web.send(T.HELLO, b"TAKEN")
        ftype, payload = yield web.next()
        self.assertEqual((ftype, payload.split(b".")[0]), (T.ERROR, b"NAME_TAKEN"))
        join = yield self.handshake(web, b"other")
        limit = 1016 - len(join) - 1
        web.send(T.SAY, b"x" * (limit + 1))
        ftype, payload = yield web.next()
        self.assertEqual((ftype, payload.split(b".")[0]), (T.ERROR, b"TOO_LONG"))
        web.send(T.SAY, b"x" * limit)
        ftype, payload = yield web.next()
        self.assertEqual((ftype, payload), (T.MESSAGE, join + b"." + b"x" * limit))

    @defer.inlineCallbacks
    def test_several_frames_in_one_message(self):
        """One binary message may carry the whole handshake and a SAY."""
        web = yield connectWS(self.web)
        self.addCleanup(lambda: web.transport.transport.abortConnection())
        web.sendRaw(
            HEADER.pack(T.HELLO, 4) + b"many" + HEADER.pack(T.READY, 0)
            + HEADER.pack(T.SAY, 2) + b"hi"
        )  # fmt: skip
        got = yield self.frames(web, 3)
        self.assertEqual([t for t, _ in got], [T.WELCOME, T.JOIN, T.MESSAGE])
        self.assertTrue(got[2][1].endswith(b".many.hi"))

    @defer.inlineCallbacks
    def test_text_message_closes_1003(self):
        tcp, _ = yield self.tcpUser(b"watcher")
        raw = yield connectRaw(self.web)
        self.addCleanup(raw.transport.abortConnection)
        self.assertEqual((yield raw.accepted), 101)
        join = yield self.handshake(raw, b"texter")
        self.assertEqual((yield tcp.next()), (T.JOIN, join))
        raw.sendText("hello")
        self.assertEqual((yield raw.closeCode), 1003)
        self.assertEqual((yield tcp.next()), (T.LEAVE, join + b".error"))

    @defer.inlineCallbacks
    def test_torn_frame_closes_1002(self):
        """A message that ends inside a frame closes 1002; the SAY before the
        tear is not handled either."""
        tcp, _ = yield self.tcpUser(b"watcher")
        raw = yield connectRaw(self.web)
        self.addCleanup(raw.transport.abortConnection)
        yield raw.accepted
        join = yield self.handshake(raw, b"tearer")
        self.assertEqual((yield tcp.next()), (T.JOIN, join))
        raw.sendRaw(HEADER.pack(T.SAY, 2) + b"ok" + HEADER.pack(T.SAY, 10) + b"cut")
        self.assertEqual((yield raw.closeCode), 1002)
        self.assertEqual((yield tcp.next()), (T.LEAVE, join + b".error"))

    @defer.inlineCallbacks
    def test_oversized_header_gets_frame_too_large(self):
        raw = yield connectRaw(self.web)
        self.addCleanup(raw.transport.abortConnection)
        yield raw.accepted
        raw.sendRaw(HEADER.pack(T.SAY, 1017))
        ftype, payload = yield raw.next()
        self.assertEqual((ftype, payload.split(b".")[0]), (T.ERROR, b"FRAME_TOO_LARGE"))
        self.assertEqual((yield raw.closeCode), 1000)

    @defer.inlineCallbacks
    def test_origin(self):
        """A foreign Origin gets 403 before the upgrade; the page's own is let in."""
        foreign = yield connectRaw(self.web, origin="http://evil.example")
        self.addCleanup(foreign.transport.abortConnection)
        self.assertEqual((yield foreign.accepted), 403)
        own = yield connectRaw(self.web, origin=f"http://127.0.0.1:{self.web}")
        self.addCleanup(own.transport.abortConnection)
        self.assertEqual((yield own.accepted), 101)
        self.assertIn("origin 'http://evil.example' not allowed", self.daemon.log)

    @defer.inlineCallbacks
    def test_page_and_headers(self):
        agent = Agent(reactor)
        for path, kind in [
            (b"/", b"text/html"),
            (b"/app.js", b"text/javascript"),
            (b"/wire.js", b"text/javascript"),
            (b"/rooms.js", b"text/javascript"),
            (b"/commands.js", b"text/javascript"),
            (b"/style.css", b"text/css"),
            (b"/nothing", None),
        ]:
            url = b"http://127.0.0.1:%d%s" % (self.web, path)
            response = yield agent.request(b"GET", url, Headers())
            body = yield readBody(response)
            h = response.headers
            csp = h.getRawHeaders(b"content-security-policy")[0]
            self.assertIn(b"frame-ancestors 'none'", csp)
            self.assertNotIn(b"unsafe-inline", csp)
            self.assertEqual(h.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertTrue(h.getRawHeaders(b"referrer-policy"))
            if kind is None:
                self.assertEqual(response.code, 404)
                continue
            self.assertEqual(response.code, 200)
            self.assertTrue(h.getRawHeaders(b"content-type")[0].startswith(kind))
            if path == b"/":
                self.assertIn(b'<script type="module" src="app.js">', body)


class WebLimitTests(WebCase):
    """The same limits as TCP, through the same factory."""

    options = (
        "--max-backlog", "64KiB", "--max-per-ip", "2", "--limit-exempt", "none",
        "--rate-limit", "0", "--connect-rate", "0",
    )  # fmt: skip

    @defer.inlineCallbacks
    def test_slow_browser_is_cut_off(self):
        """A WebSocket user that stops reading pauses its fan-out and is cut
        off as SLOW_CONSUMER; the others go on."""
        talker, _ = yield self.tcpUser(b"talker")
        sleeper, sjoin = yield self.wsUser(b"sleeper")
        self.assertEqual((yield talker.next())[0], T.JOIN)
        sleeper.transport.transport.pauseProducing()  # stop reading its socket
        left = yield sayUntilLeave(talker)
        self.assertEqual(left, sjoin + b".slow")
        talker.send(T.ECHO, b"still here")
        self.assertEqual((yield talker.next()), (T.ECHO, b"still here"))

    @defer.inlineCallbacks
    def test_per_address_limit_counts_websockets(self):
        yield self.tcpUser(b"one")
        yield self.wsUser(b"two")
        third = yield connectWS(self.web)
        self.addCleanup(lambda: third.transport.transport.abortConnection())
        ftype, payload = yield third.next()
        self.assertEqual((ftype, payload.split(b".")[0]), (T.ERROR, b"SERVER_FULL"))
        yield third.closed


class FrontEndCountTests(WebCase):
    options = ("--admin", "tcp:0:interface=127.0.0.1")

    @defer.inlineCallbacks
    def get(self, path: bytes) -> defer.Deferred:
        url = b"http://127.0.0.1:%d%s" % (self.daemon.adminPort, path)
        response = yield Agent(reactor).request(b"GET", url)
        body = yield readBody(response)
        return body

    @defer.inlineCallbacks
    def test_status_and_metrics_count_users_per_front_end(self):
        import json

        yield self.wsUser(b"webby")
        yield self.tcpUser(b"term")
        yield self.tcpUser(b"term2")
        status = json.loads((yield self.get(b"/status")))
        self.assertEqual(
            status["front_ends"],
            {
                "tcp": {"connections": 2, "active_users": 2},
                "websocket": {"connections": 1, "active_users": 1},
            },
        )
        metrics = (yield self.get(b"/metrics")).decode()
        self.assertIn(
            'chatd_front_end_active_users{front_end="websocket"} 1.0', metrics
        )
        self.assertIn('chatd_front_end_active_users{front_end="tcp"} 2.0', metrics)
