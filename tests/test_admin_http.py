"""The admin listener's HTTP guards (issue 14), in memory with task.Clock.

Each test drives the real ``adminSite(service)`` through a StringTransport:
what is answered at the headers, what is never stored, when a slow request
is cut off, how many connections are served, and what reaches the logs.
"""

from __future__ import annotations

import io

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatd.server import admin
from chatd.server.config import Config
from chatd.server.service import ChatService
from chatd.server.states import ServerState

TOKEN = b"s3cret-admin-token"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def request(
    method: bytes = b"POST",
    path: bytes = b"/kick",
    token: bytes | None = TOKEN,
    headers: dict[bytes, bytes] | None = None,
) -> bytes:
    """A request line and headers (no body)."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: admin"]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token)
    for name, value in (headers or {}).items():
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class AdminHTTPTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = ChatService(
            Config(admin_token=TOKEN), reactor=self.clock, handleSignals=False
        )
        self.service.lifecycle.state = ServerState.ACTIVE
        self.site = admin.adminSite(self.service)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self):  # type: ignore[no-untyped-def]
        """(channel, transport) of a new admin connection from 127.0.0.1."""
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        return channel, transport

    def close(self, channel) -> None:  # type: ignore[no-untyped-def]
        channel.connectionLost(Failure(ConnectionDone()))

    def status(self, transport: StringTransport) -> bytes:
        return transport.value().split(b"\r\n", 1)[0]

    def logText(self) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in self.events)


class EarlyRefusalTests(AdminHTTPTestCase):
    def test_unauthenticated_answered_at_headers(self):
        """No token: 401 as soon as the headers are in, before any body byte,
        and no ``100 Continue`` invites the body."""
        channel, transport = self.connect()
        channel.dataReceived(
            request(
                token=None,
                headers={b"Content-Length": b"1000", b"Expect": b"100-continue"},
            )
        )
        self.assertEqual(self.status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertIn(b"www-authenticate: bearer", transport.value().lower())
        self.assertTrue(transport.disconnecting)
        self.assertIn(
            "refused POST /kick from 127.0.0.1: missing token", self.logText()
        )

    def test_wrong_token_body_never_stored(self):
        """A wrong token: 401 with the body only begun; what came is dropped."""
        channel, transport = self.connect()
        channel.dataReceived(
            request(token=b"guess", headers={b"Content-Length": b"200000"})
            + b"x" * 50000
        )
        self.assertEqual(self.status(transport), b"HTTP/1.1 401 Unauthorized")
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertNotIn("guess", self.logText())

    def test_announced_length_over_cap(self):
        """100 MiB announced: 413 at the headers, nothing stored."""
        channel, transport = self.connect()
        channel.dataReceived(
            request(headers={b"Content-Length": str(100 << 20).encode()})
            + b"y" * 100000  # what came with the headers is dropped
        )
        self.assertEqual(
            self.status(transport), b"HTTP/1.1 413 Request Entity Too Large"
        )
        self.assertIn(b"over the limit of 65536 bytes", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertIn(
            "refused POST /kick from 127.0.0.1: body over 65536", self.logText()
        )

    def test_body_at_cap_served(self):
        """Exactly MAX_BODY bytes is allowed: the request is served."""
        channel, transport = self.connect()
        body = b"name=" + b"n" * (admin.MAX_BODY - 5)
        channel.dataReceived(
            request(
                headers={
                    b"Content-Length": b"%d" % len(body),
                    b"Content-Type": b"application/x-www-form-urlencoded",
                }
            )
            + body
        )
        self.assertEqual(self.status(transport), b"HTTP/1.1 404 Not Found")
        self.assertIn(b"no user", transport.value())

    def test_one_byte_over_cap(self):
        channel, transport = self.connect()
        channel.dataReceived(
            request(headers={b"Content-Length": b"%d" % (admin.MAX_BODY + 1)})
        )
        self.assertEqual(
            self.status(transport), b"HTTP/1.1 413 Request Entity Too Large"
        )

    def test_chunked_cut_off_at_cap(self):
        """A chunked body is stored only up to the cap, then 413 and close."""
        channel, transport = self.connect()
        channel.dataReceived(request(headers={b"Transfer-Encoding": b"chunked"}))
        self.assertEqual(transport.value(), b"")  # allowed so far
        req = channel.requests[-1]
        for _ in range(6):
            channel.dataReceived(chunk(b"z" * 10000))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(req.content.getvalue()), 60000)
        # 70000 > 65536; the rest of the body, in the same read, is dropped
        channel.dataReceived((chunk(b"z" * 10000) * 3) + b"0\r\n\r\n")
        self.assertEqual(
            self.status(transport), b"HTTP/1.1 413 Request Entity Too Large"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(req.content.getvalue()), 60000)
        self.assertIsInstance(req.content, io.BytesIO)
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)

    def test_public_metrics_needs_no_token(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"GET", b"/metrics", token=None))
        self.assertEqual(self.status(transport), b"HTTP/1.1 200 OK")
        # Per 1.2 room (the default room is always there).
        self.assertIn(b'chatd_room_users{room="lobby"} 0.0', transport.value())
        self.assertIn(b'chatd_room_events_total{room="lobby"} 0.0', transport.value())

    def test_authorized_request_keeps_alive(self):
        """A good request is served and the connection stays open for more."""
        channel, transport = self.connect()
        channel.dataReceived(request(b"GET", b"/status"))
        self.assertEqual(self.status(transport), b"HTTP/1.1 200 OK")
        self.assertFalse(transport.disconnecting)


class TimeoutTests(AdminHTTPTestCase):
    def test_slow_body_deadline(self):
        """A byte a second does not keep a request alive: the deadline is
        REQUEST_TIMEOUT from the connection, then 408 and close."""
        channel, transport = self.connect()
        channel.dataReceived(request(headers={b"Content-Length": b"100"}))
        for _ in range(int(admin.REQUEST_TIMEOUT) - 1):
            self.clock.advance(1)
            channel.dataReceived(b"a")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.status(transport), b"HTTP/1.1 408 Request Time-out")
        self.assertIn(b"within 10 s", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertIn("did not send a whole request in 10 s", self.logText())
        self.close(channel)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slow_headers_deadline(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /status HTTP/1.1\r\n")
        for _ in range(20):
            self.clock.advance(admin.REQUEST_TIMEOUT / 20)
            channel.dataReceived(b"X-Drip: 1\r\n")
        self.assertEqual(self.status(transport), b"HTTP/1.1 408 Request Time-out")
        self.assertTrue(transport.disconnecting)

    def test_idle_connection_closed(self):
        """No request at all, or none after a response: closed, no 408."""
        channel, transport = self.connect()
        channel.dataReceived(request(b"GET", b"/status"))
        answered = transport.value()
        self.clock.advance(admin.REQUEST_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answered)

    def test_timeout_is_read_when_the_site_is_built(self):
        """adminSite reads the module constant then (a .tac may change it)."""
        self.patch(admin, "REQUEST_TIMEOUT", 0.5)
        self.site = admin.adminSite(self.service)
        channel, transport = self.connect()
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnecting)


class ConnectionLimitTests(AdminHTTPTestCase):
    def test_limit(self):
        """MAX_CONNECTIONS are served; the next gets 503 and is closed at once;
        once one closes, a new one is served again."""
        held = [self.connect() for _ in range(admin.MAX_CONNECTIONS)]
        channel, transport = self.connect()
        self.assertEqual(self.status(transport), b"HTTP/1.1 503 Service Unavailable")
        self.assertTrue(transport.disconnecting)
        self.assertIn("32 connections open", self.logText())
        # A few more get their 503 at once; past that, until those sockets
        # close, the port closes new ones unanswered (no descriptor kept).
        busy = [self.connect()[0] for _ in range(3)]
        self.assertIsNone(self.site.buildProtocol(PEER))
        for p in [channel, *busy]:
            self.close(p)
        channel, transport = self.connect()
        self.assertEqual(self.status(transport), b"HTTP/1.1 503 Service Unavailable")
        self.close(channel)
        self.close(held[0][0])
        self.assertIn(
            "below the connection limit again; 6 connections refused", self.logText()
        )
        channel, transport = self.connect()
        channel.dataReceived(request(b"GET", b"/status"))
        self.assertEqual(self.status(transport), b"HTTP/1.1 200 OK")
        for channel, _ in held[1:]:
            self.close(channel)
        self.assertEqual(self.site.openConnections, 1)


class LogTests(AdminHTTPTestCase):
    def test_access_log_has_no_query_or_token(self):
        """The access line shows the path, never the query string or token."""
        self.site.startFactory()
        self.addCleanup(self.site.stopFactory)
        accessLog = io.StringIO()
        self.site.logFile = accessLog
        channel, transport = self.connect()
        channel.dataReceived(
            request(
                b"GET",
                b"/status?token=QUERYSECRET",
                headers={b"Referer": b"http://x/?token=REFSECRET"},
            )
        )
        self.assertEqual(self.status(transport), b"HTTP/1.1 200 OK")
        line = accessLog.getvalue()
        self.assertIn('"GET /status HTTP/1.1" 200', line)
        for secret in ("QUERYSECRET", "REFSECRET", TOKEN.decode()):
            self.assertNotIn(secret, line)
            self.assertNotIn(secret, self.logText())


class ConflictTests(AdminHTTPTestCase):
    def post(self, path: bytes, body: bytes) -> bytes:
        channel, transport = self.connect()
        channel.dataReceived(
            request(
                path=path,
                headers={
                    b"Content-Length": b"%d" % len(body),
                    b"Content-Type": b"application/x-www-form-urlencoded",
                },
            )
            + body
        )
        return transport.value()

    def test_maintenance_twice(self):
        self.assertIn(b"200 OK", self.post(b"/maintenance", b"on"))
        answer = self.post(b"/maintenance", b"on")
        self.assertIn(b"409 Conflict", answer)
        self.assertIn(b'"already in maintenance"', answer)
        self.assertNotIn(b"MAINTENANCE ->", answer)

    def test_maintenance_off_when_not_in_it(self):
        answer = self.post(b"/maintenance", b"off")
        self.assertIn(b"409 Conflict", answer)
        self.assertIn(b'"not in maintenance"', answer)

    def test_maintenance_while_reloading(self):
        self.service.lifecycle.state = ServerState.REBOOTING
        answer = self.post(b"/maintenance", b"on")
        self.assertIn(b'"cannot start maintenance while reloading"', answer)
