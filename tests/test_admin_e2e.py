"""End to end: the admin port under abuse (issue 14), against a real twistd.

The admin listener binds port 0 and the test reads the port back from the
log.  Requests are written by hand over a raw TCP connection, so a test can
send headers and *not* send the body it announced, or dribble it.  Each wait
for the server has its own deadline, so a server that would wait for the
body forever fails the test in seconds rather than hanging it.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import Daemon, RawClient, connect

TOKEN = b"s3cret-admin-token"
#: How long a test waits for an answer the server should give at once.
PROMPT = 5.0
ADMIN_LINE = re.compile(r"admin interface on http://127\.0\.0\.1:(\d+)/")

#: chatd.tac with the admin limits taken from the test's environment.
TAC = """\
import os

from twisted.application import service

from chatd.server import admin
from chatd.server.config import fromEnvironment
from chatd.server.tap import bindOrExit, buildService

admin.REQUEST_TIMEOUT = float(os.environ["TEST_ADMIN_TIMEOUT"])
application = service.Application("chatd")
bindOrExit(buildService(fromEnvironment(), loader=fromEnvironment)).setServiceParent(
    application
)
"""


def waitForMatch(daemon: Daemon, pattern: re.Pattern) -> defer.Deferred:
    """Fires with the first match of ``pattern`` in the daemon's output (now
    or once more output comes): a port's digits may come in a later read."""
    d: defer.Deferred = defer.Deferred()
    watch = daemon.watch
    original = watch.outReceived

    def received(data: bytes) -> None:
        original(data)
        match = pattern.search(daemon.log)
        if match is not None and not d.called:
            watch.outReceived = watch.errReceived = original
            d.callback(match)

    watch.outReceived = watch.errReceived = received
    received(b"")
    return d


def head(path: bytes, length: int | None = None, token: bytes | None = TOKEN) -> bytes:
    """A POST request's line and headers, announcing ``length`` body bytes."""
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token)
    lines.append(b"Content-Type: application/x-www-form-urlencoded")
    if length is None:
        lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class AdminAbuseTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.tokenFile = os.path.join(self.tmp, "token")
        with open(self.tokenFile, "wb") as f:
            f.write(TOKEN + b"\n")

    @defer.inlineCallbacks
    def daemon(self, timeout: float | None = None, maxFiles: int | None = None):
        """twistd with an admin port; with ``timeout``, from a .tac that sets
        the admin request timeout (the real default is 10 s)."""
        admin = ["--admin", "tcp:0:interface=127.0.0.1"]
        token = ["--admin-token-file", self.tokenFile]
        if timeout is None:
            daemon = Daemon("--stats-interval", "0", *admin, *token, maxFiles=maxFiles)
        else:
            tac = os.path.join(self.tmp, "admin.tac")
            with open(tac, "w") as f:
                f.write(TAC)
            daemon = Daemon(
                command=["-y", tac],
                env={
                    "CHATD_ADMIN": admin[1],
                    "CHATD_ADMIN_TOKEN_FILE": self.tokenFile,
                    "CHATD_STATS_INTERVAL": "0",
                    "TEST_ADMIN_TIMEOUT": str(timeout),
                },
                maxFiles=maxFiles,
            )
            daemon.env["CHATD_LISTEN"] = daemon.listen
        self.addCleanup(daemon.stop)
        yield daemon.start()
        match = yield waitForMatch(daemon, ADMIN_LINE)
        self.adminPort = int(match.group(1))
        return daemon

    @defer.inlineCallbacks
    def raw(self, data: bytes = b""):
        """A raw connection to the admin port that has sent ``data``."""
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.adminPort)
        client = yield endpoint.connect(protocol.Factory.forProtocol(RawClient))
        self.addCleanup(client.transport.abortConnection)
        if data:
            client.transport.write(data)
        return client

    def answered(self, client: RawClient, within: float = PROMPT) -> defer.Deferred:
        """Fires with what the server sent once it closed, or fails after
        ``within`` seconds (a server waiting for a body never closes)."""
        return client.closed.addTimeout(within, reactor)

    @defer.inlineCallbacks
    def test_announced_100mib_refused_at_once(self):
        """100 MiB announced, none sent: 413 and closed at once."""
        yield self.daemon()
        client = yield self.raw(head(b"/kick", 100 << 20))
        data = yield self.answered(client)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
        self.assertIn(b"over the limit of 65536 bytes", data)

    @defer.inlineCallbacks
    def test_chunked_body_over_cap(self):
        """A chunked body is cut off with 413 once it passes 64 KiB."""
        daemon = yield self.daemon()
        client = yield self.raw(head(b"/kick", None))
        piece = b"name=" + b"x" * 8187
        for _ in range(9):  # 72 KiB, and never the terminating chunk
            client.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        data = yield self.answered(client)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
        yield daemon.waitForLog("refused POST /kick from 127.0.0.1: body over 65536")

    @defer.inlineCallbacks
    def test_token_checked_before_body(self):
        """No token, or a wrong one: 401 while the body is still unsent."""
        daemon = yield self.daemon()
        for token, why in ((None, "missing"), (b"guess", "wrong")):
            client = yield self.raw(head(b"/maintenance", 400 << 20, token))
            data = yield self.answered(client)
            self.assertTrue(data.startswith(b"HTTP/1.1 401 "), data)
            yield daemon.waitForLog(
                f"refused POST /maintenance from 127.0.0.1: {why} token"
            )
        self.assertNotIn("guess", daemon.log)
        self.assertIn("ACTIVE", daemon.log)  # not in maintenance: nothing done
        self.assertNotIn("MAINTENANCE", daemon.log)

    @defer.inlineCallbacks
    def test_slow_body_timed_out(self):
        """A body dribbled a byte at a time is cut off at the request
        deadline (1 s here) with 408, although bytes keep coming."""
        yield self.daemon(timeout=1.0)
        started = reactor.seconds()
        client = yield self.raw(head(b"/kick", 1000) + b"name=")
        drip = task.LoopingCall(client.transport.write, b"x")
        drip.start(0.1)
        self.addCleanup(lambda: drip.stop() if drip.running else None)
        data = yield self.answered(client, within=10)
        elapsed = reactor.seconds() - started
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        self.assertIn(b"within 1 s", data)
        self.assertGreaterEqual(elapsed, 0.9)

    @defer.inlineCallbacks
    def test_connection_cap_leaves_descriptors_for_chat(self):
        """With 60 idle admin connections and few descriptors, the admin port
        holds 32 and closes the rest (503 as long as that costs nothing), it
        never runs out of descriptors, and a chat user still joins."""
        daemon = yield self.daemon(maxFiles=56)
        clients = []
        for _ in range(60):
            clients.append((yield self.raw()))
        # Accepted in order: the first 32 are held, the others refused.
        refused = yield defer.gatherResults(
            [c.closed for c in clients[32:]]
        ).addTimeout(PROMPT, reactor)
        self.assertIn(b"HTTP/1.1 503 ", refused[0])
        for data in refused:
            self.assertIn(data[:13], (b"HTTP/1.1 503 ", b""))
        self.assertFalse(any(c.closed.called for c in clients[:32]))
        yield daemon.waitForLog("admin: 32 connections open")
        self.assertNotIn("EMFILE", daemon.log)

        user = yield connect(daemon.port)
        self.addCleanup(user.transport.abortConnection)
        user.send(T.HELLO, b"alice")
        self.assertEqual((yield user.next())[0], T.WELCOME)
        user.send(T.READY)
        self.assertEqual((yield user.next())[0], T.JOIN)

    @defer.inlineCallbacks
    def test_query_string_token_not_logged(self):
        """A token in the query string (or a Referer) never reaches the log."""
        daemon = yield self.daemon()
        client = yield self.raw(
            b"GET /status?token=QUERYSECRET HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN + b"\r\n"
            b"Referer: http://x/?token=REFSECRET\r\nConnection: close\r\n\r\n"
        )
        data = yield self.answered(client)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        yield waitForMatch(daemon, re.compile(r'"GET /status\S* HTTP/1.1" 200'))
        for secret in ("QUERYSECRET", "REFSECRET", TOKEN.decode()):
            self.assertNotIn(secret, daemon.log)
