"""An in-memory Redis for the cluster node's unit tests, on a task.Clock.

Exactly what :class:`~chatd.cluster.redislink.RedisLink` sends: ``SCRIPT
LOAD``, ``EVALSHA`` (each of :mod:`chatd.cluster.scripts` done in Python,
keyed by its SHA: :mod:`tests.fakescripts`), ``PTTL``, ``EXISTS``,
``HGETALL``, ``XREAD BLOCK``, ``XREVRANGE``; and a few for tests to poke with (``GET``,
``DEL``, ``INCRBY``, ``HSET``, ``HLEN``).  Keys expire on the clock; replies
come a turn later (``clock.advance(0)`` runs everything due).

:meth:`FakeRedis.connect` is a :data:`~chatd.cluster.redislink.Connector`.
:meth:`FakeRedis.down` and :meth:`FakeRedis.up` take the server away and
back (commands given meanwhile wait, as txredisapi's do);
:meth:`FakeRedis.flush` is a restart empty (data and script cache gone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from tests.fakescripts import BY_SHA, FakeRedisError


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _streamId(value: bytes) -> tuple[int, int]:
    ms, _, n = value.partition(b"-")
    return int(ms), int(n or 0)


class FakeConnection:
    """One client connection: commands run in order, replies a turn later."""

    def __init__(self, server: FakeRedis, onLink: Callable[[], None] | None) -> None:
        self.server = server
        self.onLink = onLink
        self.closed = False
        self.linked = False
        self.waiting: list[tuple[tuple[bytes, ...], defer.Deferred[Any]]] = []
        #: XREADs waiting for an entry: (Deferred, timeout, the read again).
        self.reads: list[tuple[defer.Deferred[Any], Any, Callable[[], Any]]] = []

    @property
    def connected(self) -> bool:
        return self.linked and not self.closed

    def execute_command(self, *args: object) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        command = tuple(_b(a) for a in args)
        if self.connected:
            self.server.run(self, command, d)
        else:
            self.waiting.append((command, d))  # sent once connected
        return d

    def disconnect(self) -> defer.Deferred[None]:
        self.closed = True
        self.dropped()
        return defer.succeed(None)

    def linkChanged(self, up: bool) -> None:
        if self.closed or self.linked == up:
            return
        self.linked = up
        if not up:
            self.dropped()
        if self.onLink is not None:
            self.onLink()
        if up:
            waiting, self.waiting = self.waiting, []
            for command, d in waiting:
                self.server.run(self, command, d)

    def dropped(self) -> None:
        """The blocked reads fail as on a lost connection."""
        reads, self.reads = self.reads, []
        for d, timeout, _ in reads:
            timeout.cancel()
            d.errback(ConnectionError("Lost connection"))


class FakeRedis:
    """Strings with TTLs, hashes, sets and streams; the chatd scripts."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.connections: list[FakeConnection] = []
        self.isUp = True
        self.commands: list[tuple[bytes, ...]] = []  # every command run
        self._lastId = (0, 0)  # stream ids grow with time, across restarts
        self.flush()

    # -- the server ------------------------------------------------------------

    def connect(
        self, replyTimeout: float, onLink: Callable[[], None] | None = None
    ) -> FakeConnection:
        """A connection, up a turn later (if the server is)."""
        conn = FakeConnection(self, onLink)
        self.connections.append(conn)
        self.clock.callLater(0, lambda: conn.linkChanged(self.isUp))
        return conn

    def down(self) -> None:
        self.isUp = False
        for conn in self.connections:
            conn.linkChanged(False)

    def up(self) -> None:
        self.isUp = True
        for conn in self.connections:
            conn.linkChanged(True)

    def flush(self) -> None:
        """Back empty: no keys, no scripts."""
        self.strings: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.sets: dict[bytes, set[bytes]] = {}
        self.streams: dict[bytes, list[tuple[bytes, list[bytes]]]] = {}
        self.loaded: set[bytes] = set()

    def run(
        self, conn: FakeConnection, command: tuple[bytes, ...], d: defer.Deferred[Any]
    ) -> None:
        """Run now (in order), answer a turn later."""
        self.commands.append(command)
        name, args = command[0].upper().decode(), list(command[1:])
        try:
            if name == "XREAD":
                return self._block(conn, args, d)
            reply = getattr(self, "cmd_" + name)(*args)
        except FakeRedisError as e:
            self.clock.callLater(0, d.errback, e)
        else:
            self.clock.callLater(0, d.callback, reply)

    # -- keys --------------------------------------------------------------------

    def _alive(self, key: bytes) -> None:
        when = self.expiry.get(key)
        if when is not None and when <= self.clock.seconds():
            self._delete(key)

    def get(self, key: bytes) -> bytes | None:
        self._alive(key)
        return self.strings.get(key)

    def set(self, key: bytes, value: bytes, px: int = 0, nx: bool = False) -> bool:
        if nx and self.get(key) is not None:
            return False
        self.strings[key] = value
        self.expiry.pop(key, None)
        if px:
            self.expiry[key] = self.clock.seconds() + px / 1000
        return True

    def exists(self, key: bytes) -> bool:
        self._alive(key)
        return key in self.strings or key in self.hashes or key in self.sets

    def _delete(self, *keys: bytes) -> None:
        for key in keys:
            for table in (self.strings, self.expiry, self.hashes, self.sets):
                table.pop(key, None)

    def hash(self, key: bytes) -> dict[bytes, bytes]:
        return self.hashes.setdefault(key, {})

    def hdel(self, key: bytes, field: bytes) -> None:
        fields = self.hashes.get(key, {})
        fields.pop(field, None)
        if not fields:
            self.hashes.pop(key, None)

    def members(self, key: bytes) -> list[bytes]:
        return sorted(self.sets.get(key, ()))

    def sadd(self, key: bytes, member: bytes) -> None:
        self.sets.setdefault(key, set()).add(member)

    def srem(self, key: bytes, member: bytes) -> None:
        members = self.sets.get(key, set())
        members.discard(member)
        if not members:
            self.sets.pop(key, None)

    def incrby(self, key: bytes, n: int) -> int:
        value = int(self.get(key) or 0) + n
        self.strings[key] = _b(value)
        return value

    def xadd(self, key: bytes, maxlen: bytes, fields: list[object]) -> bytes:
        ms = int(self.clock.seconds() * 1000)
        last, n = self._lastId
        newId = (ms, 0) if ms > last else (last, n + 1)
        if newId == (0, 0):
            newId = (0, 1)
        self._lastId = newId
        entryId = b"%d-%d" % newId
        stream = self.streams.setdefault(key, [])
        stream.append((entryId, [_b(f) for f in fields]))
        del stream[: max(0, len(stream) - int(maxlen))]
        for conn in self.connections:
            for waiting in list(conn.reads):
                d, timeout, read = waiting
                reply = read()
                if reply is not None:
                    conn.reads.remove(waiting)
                    timeout.cancel()
                    self.clock.callLater(0, d.callback, reply)
        return entryId

    def flat(self, key: bytes) -> list[bytes]:
        return [item for pair in self.hashes.get(key, {}).items() for item in pair]

    # -- plain commands ----------------------------------------------------------

    def cmd_SCRIPT(self, load: bytes, source: bytes) -> bytes:
        sha = hashlib.sha1(source).hexdigest().encode()
        self.loaded.add(sha)
        return sha

    def cmd_EVALSHA(self, sha: bytes, nkeys: bytes, *argv: bytes) -> Any:
        if sha not in self.loaded:
            raise FakeRedisError("NOSCRIPT No matching script. Use EVAL.")
        return BY_SHA[sha](self, list(argv))

    def cmd_PTTL(self, key: bytes) -> int:
        if not self.exists(key):
            return -2
        when = self.expiry.get(key)
        return -1 if when is None else int((when - self.clock.seconds()) * 1000)

    def cmd_EXISTS(self, key: bytes) -> int:
        return int(self.exists(key))

    def cmd_HGETALL(self, key: bytes) -> list[bytes]:
        return self.flat(key)

    def cmd_HSET(self, key: bytes, field: bytes, value: bytes) -> int:
        self.hash(key)[field] = value
        return 1

    def cmd_HLEN(self, key: bytes) -> int:
        return len(self.hashes.get(key, {}))

    def cmd_GET(self, key: bytes) -> bytes | None:
        return self.get(key)

    def cmd_DEL(self, *keys: bytes) -> int:
        self._delete(*keys)
        return len(keys)

    def cmd_INCRBY(self, key: bytes, n: bytes) -> int:
        return self.incrby(key, int(n))

    def cmd_XREVRANGE(
        self, key: bytes, end: bytes, start: bytes, _count: bytes, n: bytes
    ) -> list[Any]:
        """XREVRANGE key end|+ - COUNT n (the only form the node sends)."""
        entries = [[i, f] for i, f in self.streams.get(key, [])]
        if end != b"+":
            top = _streamId(end)
            entries = [[i, f] for i, f in entries if _streamId(i) <= top]
        return entries[::-1][: int(n)]

    def lastId(self, key: bytes) -> bytes:
        """The stream's last entry id (0-0: none)."""
        stream = self.streams.get(key)
        return stream[-1][0] if stream else b"0-0"

    def _xread(self, count: int, keys: list[bytes], afters: list[bytes]) -> Any:
        reply = []
        for key, after in zip(keys, afters, strict=True):
            start = _streamId(after)
            entries = [
                [entryId, fields]
                for entryId, fields in self.streams.get(key, [])
                if _streamId(entryId) > start
            ][:count]
            if entries:
                reply.append([key, entries])
        return reply or None

    def _block(self, conn: FakeConnection, args: list[bytes], d: Any) -> None:
        """XREAD COUNT n BLOCK ms STREAMS key... id...: answer, or wait
        until an XADD to any of them (or the block's end)."""
        count, block, named = int(args[1]), int(args[3]), args[5:]
        half = len(named) // 2
        keys, afters = named[:half], named[half:]

        def read() -> Any:
            return self._xread(count, keys, afters)

        reply = read()
        if reply is not None:
            self.clock.callLater(0, d.callback, reply)
            return

        def timedOut() -> None:
            conn.reads.remove(waiting)
            d.callback(None)

        waiting = (d, self.clock.callLater(block / 1000, timedOut), read)
        conn.reads.append(waiting)
