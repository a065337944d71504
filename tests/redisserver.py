"""A real ``redis-server`` for the cluster tests, on a unix socket of its own.

Redis cannot bind port 0, so it listens on no TCP port at all
(``--port 0``) and on a unix socket in a temporary directory: no clash
with another server, never 6379.  Readiness is its own log line; it is
stopped by its PID.  It keeps an append-only file, so a restart (the
"Redis away for a while" tests) finds its data again, unless :meth:`wipe`
gave it a new, empty data directory (Redis restarted empty).
"""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
from pathlib import Path

from twisted.internet import defer, error, protocol, reactor
from twisted.trial import unittest

REDIS = shutil.which("redis-server")
READY = b"ready to accept connections"


def skipUnlessRedis(case: type) -> type:
    """No redis-server on this machine: say how to get one."""
    if REDIS is None:
        case.skip = "redis-server is not installed (apt-get install -y redis-server)"  # type: ignore[attr-defined]
    return case


def freePort() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: redis cannot bind
    port 0 for TLS, so :func:`startRedis` retries when this one is taken."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Watch(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and READY in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"redis-server ended:\n{self.output.decode()}")
            )
        self.ended.callback(None)


class RedisServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
        self.socket = str(self.dir / "redis.sock")
        self.data = self.dir
        self.url = f"unix://{self.socket}"
        self.process = None
        self.watch: _Watch | None = None
        self.tlsArgs: list[str] = []
        self.tlsPort = 0

    def withTLS(self, cert: str, key: str, ca: str) -> None:
        """Also listen for TLS on a TCP port (redis cannot bind port 0: the
        port is picked here, and :func:`startRedis` retries if it is taken)."""
        self.tlsPort = freePort()
        self.tlsArgs = [
            "--tls-port", str(self.tlsPort),
            "--tls-cert-file", cert,
            "--tls-key-file", key,
            "--tls-ca-cert-file", ca,
            "--tls-auth-clients", "no",
            "--bind", "127.0.0.1",
        ]  # fmt: skip

    def start(self) -> defer.Deferred:
        assert REDIS is not None
        self.watch = _Watch()
        args = [
            REDIS,
            "--port", "0",
            *self.tlsArgs,
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--dir", str(self.data),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = reactor.spawnProcess(self.watch, REDIS, args, env=None)
        return self.watch.ready

    def wipe(self) -> None:
        """The next start begins empty (a new data directory), on the same
        socket."""
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=self.dir))

    def stop(self) -> defer.Deferred:
        """SIGTERM (it writes its data out); fires once it has exited."""
        if self.watch is None or self.watch.ended.called:
            return defer.succeed(None)
        try:
            self.process.signalProcess(signal.SIGTERM)  # type: ignore[attr-defined]
        except error.ProcessExitedAlready:
            pass
        return self.watch.ended

    def cleanup(self) -> defer.Deferred:
        d = self.stop()
        d.addBoth(lambda _: shutil.rmtree(self.dir, ignore_errors=True))
        return d


@defer.inlineCallbacks
def startRedis(case: unittest.TestCase, tls: tuple[str, str, str] | None = None):  # type: ignore[no-untyped-def]
    """A running RedisServer, stopped and removed when ``case`` ends; with
    ``tls`` (cert, key, CA files) also on a TLS port of 127.0.0.1."""
    server = RedisServer()
    case.addCleanup(server.cleanup)
    for attempt in range(5):
        if tls is not None:
            server.withTLS(*tls)
        try:
            yield server.start()
            return server
        except RuntimeError as e:
            if tls is None or "in use" not in str(e) or attempt == 4:
                raise
