"""A cluster node's two connections to Redis, and its scripts by name.

:class:`RedisLink` holds the command connection (scripts, a few plain
commands; its connecting and disconnecting are the link going up and down)
and the reader's (``XREAD BLOCK`` waits there, never in front of a command).
It is given a :data:`Connector` rather than a reactor, so a test can put an
in-memory Redis behind it; :func:`connectRedis` is the real one, with the
reactor it is given (none is imported here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.options import RedisTarget
from chatd.cluster.scripts import SCRIPTS, SHA

log = Logger(namespace="chatd.cluster")

#: Seconds a command may wait for Redis' answer.
REPLY_TIMEOUT = 5.0
#: XREAD BLOCK, in milliseconds; its connection times out a little later.
READ_BLOCK_MS = 2000
READ_COUNT = 1000


class ClusterUnavailable(Exception):
    """Redis cannot be reached (or this node holds no lease): try again."""


def text(value: object) -> str:
    """A Redis reply or error as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Connection(Protocol):
    """What the link asks of one connection to Redis."""

    @property
    def connected(self) -> bool:
        """Whether a command given now is sent now (not on reconnection)."""
        ...

    def execute_command(self, *args: object) -> Deferred[Any]: ...

    def disconnect(self) -> Deferred[Any]: ...


#: Opens a connection: (reply timeout, called on connect and on disconnect).
Connector = Callable[[float, "Callable[[], None] | None"], Connection]


class RedisLink:
    """Scripts by name (EVALSHA, reloaded after a Redis restart), commands
    counted for the benchmarks, and whether Redis is reachable now."""

    def __init__(self, connect: Connector, display: str, prefix: str) -> None:
        self._connect = connect
        self.display = display
        self.prefix = prefix
        self.commands = 0  # Redis commands sent, for the benchmarks
        self.cmd: Connection | None = None
        self.reader: Connection | None = None
        self._onLink: Callable[[], None] = lambda: None
        self._wasUp: bool | None = None

    def open(self, onLink: Callable[[], None]) -> None:
        """Connect (in the background); ``onLink`` on every up and down."""
        self._onLink = onLink
        self.cmd = self._connect(REPLY_TIMEOUT, self._linkEvent)
        self.reader = self._connect(READ_BLOCK_MS / 1000 + REPLY_TIMEOUT, None)

    @property
    def up(self) -> bool:
        return self.cmd is not None and self.cmd.connected

    def _linkEvent(self) -> None:
        self.noticeChange()
        self._onLink()

    def noticeChange(self) -> None:
        """Log the link going up or down (once each time)."""
        up = self.up
        if up != self._wasUp:
            if self._wasUp is not None or not up:
                log.info(
                    "cluster: Redis link {state} ({redis})",
                    state="up" if up else "down",
                    redis=self.display,
                )
            self._wasUp = up

    def command(self, *args: object) -> Deferred[Any]:
        """One plain command on the command connection."""
        assert self.cmd is not None
        self.commands += 1
        return self.cmd.execute_command(*args)

    def read(self, streams: list[tuple[bytes, bytes]]) -> Deferred[Any]:
        """The entries after each (stream name, id), in ONE XREAD (waits up
        to READ_BLOCK_MS for any of them)."""
        assert self.reader is not None
        self.commands += 1
        prefix = self.prefix.encode()
        return self.reader.execute_command(
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            READ_BLOCK_MS,
            "STREAMS",
            *[prefix + name for name, _ in streams],
            *[entryId for _, entryId in streams],
        )

    def script(self, name: str, *args: object) -> Deferred[Any]:
        """EVALSHA; when Redis lost its script cache (a restart), the call
        fails and every script is loaded again, so later calls work and no
        batch overtakes another."""
        d = self.command("EVALSHA", SHA[name], 0, self.prefix, *args)
        d.addErrback(self._noScript)
        return d

    async def call(self, name: str, *args: object) -> Any:
        """A script whose order does not matter (heartbeat, register...):
        tried again once after Redis lost its script cache."""
        try:
            return await self.script(name, *args)
        except Exception as e:
            if "NOSCRIPT" not in text(e):
                raise
        await self.loadScripts()
        return await self.script(name, *args)

    def _noScript(self, failure: Failure) -> Failure:
        if "NOSCRIPT" in text(failure.value):
            self.loadScripts()
        return failure

    def loadScripts(self) -> Deferred[Any]:
        assert self.cmd is not None
        self.commands += len(SCRIPTS)
        cmd = self.cmd
        return defer.gatherResults(
            [cmd.execute_command("SCRIPT", "LOAD", src) for src in SCRIPTS.values()],
            consumeErrors=True,
        )

    async def close(self) -> None:
        """Disconnect both (errors ignored: we are leaving anyway)."""
        for conn in (self.cmd, self.reader):
            if conn is not None:
                try:
                    await conn.disconnect()
                except Exception:
                    pass


class RedisConnection:
    """A txredisapi connection handler as a :class:`Connection`."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    @property
    def connected(self) -> bool:
        return bool(self.handler._factory.size > 0)

    def execute_command(self, *args: object) -> Deferred[Any]:
        return self.handler.execute_command(*args)

    def disconnect(self) -> Deferred[Any]:
        return self.handler.disconnect()


def connectRedis(
    reactor: Any,
    target: RedisTarget,
    replyTimeout: float | None,
    onLink: Callable[[], None] | None = None,
) -> RedisConnection:
    """One connection, reconnecting, bytes in and out.  ``onLink`` is called
    whenever it connects or disconnects.  (A command given while it is
    disconnected waits for the reconnection: callers check ``connected``.)"""
    import txredisapi

    factory = txredisapi.RedisFactory(
        target.display,
        target.db or None,
        1,
        isLazy=True,
        charset=None,
        password=target.password,
        replyTimeout=replyTimeout,
        convertNumbers=False,
        username=target.username,
    )
    factory.initialDelay = 0.5
    factory.maxDelay = 2
    if onLink is not None:
        added, removed = factory.addConnection, factory.delConnection

        def addConnection(conn: Any) -> None:
            added(conn)
            onLink()

        def delConnection(conn: Any) -> None:
            removed(conn)
            onLink()

        factory.addConnection = addConnection
        factory.delConnection = delConnection
    factory.startConnecting(redisEndpoint(reactor, target))
    return RedisConnection(factory.handler)


def redisEndpoint(reactor: Any, target: RedisTarget) -> Any:
    """TCP, TLS with the host's certificate checked, or a unix socket."""
    if target.scheme == "unix":
        return endpoints.UNIXClientEndpoint(reactor, target.path, timeout=5)
    endpoint: Any = endpoints.HostnameEndpoint(
        reactor, target.host, target.port, timeout=5
    )
    if target.scheme == "rediss":
        from twisted.internet import ssl

        options = ssl.optionsForClientTLS(target.host)
        endpoint = endpoints.wrapClientTLS(options, endpoint)
    return endpoint
