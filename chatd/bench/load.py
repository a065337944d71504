"""The load: one process's share of the connections, driven in phases.

A :class:`LoadPart` is the share of one load process: some echo
connections, or some fan-out users.  Its phases are the same whether the
orchestrator is in the same process or a parent talking over a pipe
(``--processes``): :meth:`start` connects (and handshakes), :meth:`go`
starts the load, :meth:`stop` stops new requests and waits until every
request has its answer, :meth:`finish` makes sure every broadcast reached
every user and returns the figures as a JSON-able dict.

The connections live in :mod:`chatd.bench.echo` and
:mod:`chatd.bench.fanout`; their hot path walks frames with
:class:`chatd.wire.FrameReceiver` (offsets, ``unpack_from``) and writes
what one chunk of input provoked in one write.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from chatd.bench.checks import Histogram
from chatd.bench.config import Config
from chatd.bench.conn import Conn
from chatd.bench.connect import connectAll
from chatd.bench.echo import EchoConn
from chatd.bench.errors import BenchError
from chatd.bench.fanout import FanUser
from chatd.bench.figures import Counts, partFigures, streamEnds


class LoadPart:
    """One load process's connections, driven through the phases."""

    def __init__(
        self, reactor: IReactorTime, config: Config, part: int = 0, parts: int = 1
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.part = part
        self.parts = parts
        self.counts = Counts()
        self.latency = Histogram()
        self.conns: list[Conn] = []
        self._waitingDrain: set[Conn] = set()
        self._drained: defer.Deferred | None = None
        self._allLost: defer.Deferred | None = None
        self._open = 0
        #: Fires with a :class:`BenchError` when the run cannot go on (the
        #: server rate-limits it); the orchestrator then stops at once.
        self.abandoned: defer.Deferred = defer.Deferred()

    def abandon(self, reason: BenchError) -> None:
        if not self.abandoned.called:
            self.abandoned.callback(reason)

    def abort(self) -> None:
        """Drop every connection now (the run was given up or interrupted)."""
        for conn in self.conns:
            if not conn.transport.disconnecting:
                conn.abort()

    def example(self, text: str) -> None:
        if len(self.counts.examples) < 20:
            self.counts.examples.append(text)

    # -- phases -----------------------------------------------------------

    async def start(self) -> None:
        """Connect everyone; fails with one :class:`BenchError` for all the
        connections refused, lost or not ACTIVE within ``setupTimeout``."""
        config = self.config
        specs: list[tuple[int, Callable[[], Conn]]]
        if config.mode == "echo":
            specs = [
                (n, partial(EchoConn, self, n))
                for n in range(self.part, config.connections, self.parts)
            ]
        else:
            specs = [
                (i, partial(FanUser, self, i, i if i < config.senders else None))
                for i in range(self.part, config.total, self.parts)
            ]
        self.conns = await connectAll(self.reactor, config, specs)

    def go(self) -> None:
        for conn in self.conns:
            conn.go()

    def progress(self) -> tuple[int, int]:
        return self.counts.completed, self.counts.bytes

    async def stop(self) -> None:
        """Stop sending; wait (bounded) until every request is answered."""
        self._drained = defer.Deferred()
        if self.config.mode == "echo":
            echoes = [c for c in self.conns if isinstance(c, EchoConn)]
            self._waitingDrain = {c for c in echoes if c.checker.pending}
            for echo in echoes:
                echo.running = False
        else:
            senders = [
                c for c in self.conns if isinstance(c, FanUser) and c.sender is not None
            ]
            self._waitingDrain = set(senders)
            for conn in senders:
                conn.stopSending()
        if self._waitingDrain:
            timeout = self.reactor.callLater(
                self.config.drainTimeout, self._drainTimedOut
            )
            await self._drained
            if timeout.active():
                timeout.cancel()

    def drained(self, conn: Conn) -> None:
        self._waitingDrain.discard(conn)
        if not self._waitingDrain and self._drained and not self._drained.called:
            self._drained.callback(None)

    def _drainTimedOut(self) -> None:
        self.example(f"{len(self._waitingDrain)} connections did not drain")
        self._waitingDrain.clear()
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    async def finish(self) -> dict:
        """Make sure every broadcast arrived, hang up, return the figures."""
        users = [c for c in self.conns if isinstance(c, FanUser)]
        live = [c for c in users if not c.transport.disconnecting]
        if self.config.mode == "fanout" and live:
            pings = defer.gatherResults([c.ping() for c in live])
            timeout = self.reactor.callLater(self.config.drainTimeout, pings.cancel)
            try:
                await pings
            except defer.CancelledError:
                self.example("some users got no PONG at the end")
            if timeout.active():
                timeout.cancel()
        for conn in self.conns:
            conn.collect(self.counts)
        sent, lastSeen = streamEnds(
            (u.end() for u in users), self.config.senders, self.config.rooms
        )
        self._allLost = defer.Deferred()
        if self._open:
            for conn in self.conns:
                if not conn.transport.disconnecting:
                    conn.close()
                else:
                    conn.closing = True
            await self._allLost
        return partFigures(self.counts, self.latency, sent, lastSeen)

    # -- connection bookkeeping -------------------------------------------

    def connected(self, conn: Conn) -> None:
        self._open += 1

    def lost(self, conn: Conn) -> None:
        self._open -= 1
        if self._drained is not None:
            self.drained(conn)
        if not self._open and self._allLost is not None and not self._allLost.called:
            self._allLost.callback(None)
