"""Deployment modes for the protocol contract (tests/test_contract.py).

Every check of the contract runs against each way chatd is deployed: one
process; ``--workers 2`` (both workers started at once, so the main
process's dispatcher alternates users between them); two ``--redis`` nodes
on a real ``redis-server`` (connection k goes to node k % 2); and the
WebSocket front end.  A :class:`Deployment` is started fresh for every
test (a daemon starts in about 0.3 s), so no test sees another's users.

Clients are real sockets on 127.0.0.1 (or WebSockets over them); all
waiting is on Deferreds driven by what the server sends.
"""

from __future__ import annotations

import json
import signal
from io import BytesIO
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from tests.daemon import LOOPBACK, Daemon, FrameClient, connect
from tests.redisserver import REDIS, startRedis
from tests.webclient import connectWS, webPort

ADMIN = ["--admin", LOOPBACK]
#: What every deployment gets, whatever the mode: quiet logs, a short
#: shutdown grace, an admin interface on a port of its own.
COMMON = ["--stats-interval", "0", "--shutdown-grace", "2", *ADMIN]


class Deployment:
    """One running deployment of one mode: its daemons and how a client
    reaches it."""

    #: Mode name, as the test classes are named.
    mode = "single"
    #: What a mode cannot check, and why: {check name: reason}.
    cannot: dict[str, str] = {}

    def __init__(self, case: object, options: list[str]) -> None:
        self.case = case
        self.options = [*COMMON, *options]
        self.daemons: list[Daemon] = []
        self._connections = 0

    # -- lifecycle ---------------------------------------------------------

    def daemonOptions(self) -> list[str]:
        return self.options

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        daemon = Daemon(*self.daemonOptions())
        self.case.addCleanup(daemon.stop)  # type: ignore[attr-defined]
        self.daemons.append(daemon)
        yield daemon.start()
        return self

    @property
    def servers(self) -> int:
        """Processes that admit connections on their own (--max-clients
        and maintenance count per server)."""
        return len(self.daemons)

    def stopServer(self, k: int = 0, sig: int = signal.SIGTERM) -> defer.Deferred:
        """Signal server ``k``; fires with its exit status."""
        return self.daemons[k].signal(sig)

    # -- clients -----------------------------------------------------------

    def serverOf(self, k: int) -> int:
        """Which server the k-th connection goes to."""
        return k % len(self.daemons)

    def connect(self, server: int | None = None) -> defer.Deferred:
        """A new client connection (spread over the servers unless
        ``server`` says which); closed by the test's cleanup."""
        k = self._connections
        self._connections += 1
        daemon = self.daemons[self.serverOf(k) if server is None else server]
        d = self._connect(daemon)

        def opened(client):  # type: ignore[no-untyped-def]
            self.case.addCleanup(_abort, client)  # type: ignore[attr-defined]
            return client

        return d.addCallback(opened)

    def _connect(self, daemon: Daemon) -> defer.Deferred:
        return connect(daemon.port)

    # -- operations ----------------------------------------------------------

    @defer.inlineCallbacks
    def admin(self, path: str, body: bytes, server: int = 0):  # type: ignore[no-untyped-def]
        """POST ``body`` to ``path`` of server ``server``'s admin interface;
        fires with (status code, body)."""
        agent = Agent(reactor)
        port = self.daemons[server].adminPort
        response = yield agent.request(
            b"POST",
            f"http://127.0.0.1:{port}{path}".encode(),
            Headers({b"content-type": [b"application/x-www-form-urlencoded"]}),
            FileBodyProducer(BytesIO(body)),
        )
        answer = yield readBody(response)
        return response.code, answer

    @defer.inlineCallbacks
    def status(self, server: int = 0):  # type: ignore[no-untyped-def]
        """GET /status of server ``server``, as a dict."""
        agent = Agent(reactor)
        port = self.daemons[server].adminPort
        response = yield agent.request(
            b"GET", f"http://127.0.0.1:{port}/status".encode()
        )
        return json.loads((yield readBody(response)))

    @defer.inlineCallbacks
    def everyServer(self, path: str, body: bytes):  # type: ignore[no-untyped-def]
        """POST to every server's admin interface (maintenance is per
        server); fires with their status codes."""
        codes = []
        for k in range(len(self.daemons)):
            code, _ = yield self.admin(path, body, k)
            codes.append(code)
        return codes

    @defer.inlineCallbacks
    def kick(self, name: bytes, server: int = 0):  # type: ignore[no-untyped-def]
        code, _ = yield self.admin("/kick", b"name=" + quote(name).encode(), server)
        return code


class Single(Deployment):
    mode = "single"


class Workers(Deployment):
    """``--workers 2 --min-workers 2``: users alternate between the two
    workers (checked by test_users_spread)."""

    mode = "workers"

    def daemonOptions(self) -> list[str]:
        return ["--workers", "2", "--min-workers", "2", *self.options]

    def serverOf(self, k: int) -> int:
        return 0  # one main process admits for both workers


class Redis(Deployment):
    """Two nodes on one real redis-server; connection k goes to node k % 2."""

    mode = "redis"

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        self.redis = yield startRedis(self.case)
        yield defer.gatherResults(
            [self.addNode(name) for name in ("node-a", "node-b")], consumeErrors=True
        )
        return self

    def addNode(self, name: str) -> defer.Deferred:
        """Start one more node on the same Redis; fires once it joined."""
        daemon = Daemon(
            *self.options, *("--redis", self.redis.url, "--node-name", name)
        )
        self.case.addCleanup(daemon.stop)  # type: ignore[attr-defined]
        self.daemons.append(daemon)
        d = daemon.start()
        return d.addCallback(lambda _: daemon.waitForLog(f"node {name} joined"))


class Web(Deployment):
    """The WebSocket front end: chatd frames in binary messages."""

    mode = "websocket"

    def daemonOptions(self) -> list[str]:
        return ["--web", LOOPBACK, *self.options]

    def _connect(self, daemon: Daemon) -> defer.Deferred:
        return connectWS(webPort(daemon))


MODES: dict[str, type[Deployment]] = {
    cls.mode: cls for cls in (Single, Workers, Redis, Web)
}


def skipReason(mode: str) -> str | None:
    """Why ``mode`` cannot run on this machine, or None."""
    if mode == "redis" and REDIS is None:
        return "redis-server is not installed (apt-get install -y redis-server)"
    return None


def _abort(client: FrameClient) -> defer.Deferred:
    """Cleanup: reset the client unless it is closed; fires once it is."""
    if not client.closed.called:
        client.abort()
    return client.closed
