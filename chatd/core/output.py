"""A session's output: replies in request order, batched per chunk of input,
behind the broadcasts sequenced before them, and flow control.

Part of :class:`chatd.core.session.Session` (a mixin, for the size of one
module): the session's rules decide what to say; this says it.  Replies
produced while one chunk of input is handled are collected and written at
the end of the chunk (:meth:`beginChunk`, :meth:`endChunk`), so a read of
many frames costs one write; a reply goes through the session's fan-outs
(:meth:`~chatd.core.fanout.FanOut.send`) so it never overtakes a broadcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from chatd.core.connection import ACTIVE, CLOSED
from chatd.core.fanout import IRecipient

if TYPE_CHECKING:
    from chatd.core.codec import IClientCodec
    from chatd.core.connection import IConnection, State
    from chatd.core.events import Event
    from chatd.core.fanout import FanOut
    from chatd.core.hub import Hub
    from chatd.core.roster import User
    from chatd.core.rules import ErrorCode
    from chatd.core.stats import Stats


@implementer(IRecipient)  # its half of it: write, backlog (Session the rest)
class Output:
    """Replies, batching and flow control for Session (its state, hub,
    conn, codec, fan-outs and slowConsumer)."""

    state: State
    hub: Hub
    conn: IConnection
    codec: IClientCodec
    stats: Stats
    fanout: FanOut
    roomFanouts: dict[bytes, FanOut]
    _batch: list[bytes] | None = None
    _outputBlocked = False
    _overBacklog = False
    _disconnected = False
    user: User | None

    if TYPE_CHECKING:

        def targeted(self, event: Event) -> None: ...
        def slowConsumer(self) -> None: ...
        def _countError(self, code: ErrorCode) -> None: ...

    def beginChunk(self) -> None:
        self._batch = []

    def endChunk(self) -> None:
        """Write the chunk's replies; cut off a client over its backlog."""
        self._flushBatch()
        self._batch = None
        if self._overBacklog and self.state is not CLOSED:
            self.slowConsumer()

    def reply(self, frames: bytes, count: int = 1) -> None:
        """Send frames answering this client (ECHO, PONG, USERS, ERROR...),
        in request order and after every broadcast sequenced before."""
        if self._batch is not None:
            self._batch.append(frames)
            if count != 1:
                self.stats.framesOut += count - 1
        else:
            self._writeDirect(frames, count)

    def writeWith(self, writer: Any) -> None:
        """Write broadcasts with ``writer`` from now on (a front end that
        filters its output switches writers); every fan-out it is live in
        binds the new one."""
        self.write = writer  # type: ignore[method-assign]
        for fanout in self._fanouts():
            fanout.rebind(self)

    def outputPaused(self) -> None:
        """The front end's transport is full: stop writing broadcasts."""
        self._outputBlocked = True
        self.write = self.conn.write  # type: ignore[method-assign]
        for fanout in self._fanouts():
            fanout.pause(self)

    def outputResumed(self) -> None:
        """It has room again: each fan-out writes what it kept, then live."""
        self._outputBlocked = False
        self.write = self.conn.write  # type: ignore[method-assign]
        for fanout in self._fanouts():
            fanout.resume(self)  # may cut it off (and change roomFanouts)

    def _fanouts(self) -> tuple[FanOut, ...]:
        """The fan-outs it is in (a copy: a call on one may change them)."""
        return (self.fanout, *self.roomFanouts.values())

    def notice(self, code: str, text: str) -> None:
        """A NOTICE for this connection, after what it was already sent."""
        if self.state is not CLOSED:
            self.reply(self.codec.notice(code, text))

    def error(self, code: ErrorCode, text: str | None = None) -> None:
        """A non-fatal ERROR: the connection stays open."""
        self._countError(code)
        self.reply(self.codec.error(code, text))

    def _flushBatch(self) -> None:
        batch = self._batch
        if batch:
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            count = len(batch)
            batch.clear()
            self._writeDirect(data, count)

    def _writeDirect(self, data: bytes, frames: int) -> None:
        """Write replies, after any broadcast frames sequenced before them."""
        if self._disconnected:
            return
        self.stats.framesOut += frames
        self.stats.bytesOut += len(data)
        if self.state is ACTIVE:
            for fanout in self.roomFanouts.values():  # 1.2: its rooms' first
                fanout.send(self, b"")
            self.fanout.send(self, data)
        else:
            self.conn.write(data)
        if (
            self._outputBlocked
            and self.state is not CLOSED
            and self._backlog() > self.fanout.maxBacklog
        ):
            if self._batch is None:
                self.slowConsumer()
            else:
                # Inside our own frame handler: closing here would pull the
                # state from under it (a LEAVE before its MESSAGE, a close
                # within close).  Cut off once the chunk is handled.
                self._overBacklog = True

    def _backlog(self) -> int:
        """Bytes held for this client: its front end's, and every queue of
        the fan-outs it is in."""
        held = self.fanout.backlog(self)
        for fanout in self.roomFanouts.values():
            held += fanout.backlog(self) - self.conn.backlog()
        return held

    @property
    def outputBlocked(self) -> bool:
        """Its front end's transport is full (a fan-out it joins now starts
        it paused)."""
        return self._outputBlocked

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    def backlog(self) -> int:
        return self.conn.backlog()
