"""The binary front end: chatd frames over TCP, TLS or a unix socket.

:class:`ChatProtocol` is one connection: bytes -> frames -> its
:class:`~chatd.core.session.Session`, which holds every rule; frames the
session writes go to the transport.  What is left here is what a stream
transport needs: framing with fairness between connections, fast paths for
runs of ECHO and SAY, flow control (it is the transport's push producer and
counts the bytes it wrote while the transport was full: the session's
backlog), and a lingering close so a client still sending gets its final
ERROR.  :class:`ChatFactory` admits connections (limits, maintenance) and
owns the process's :class:`~chatd.core.hub.Hub`
(:mod:`chatd.server.factory`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.core.session import CLOSED, IConnection, Session
from chatd.server.binary import BINARY, INPUTS, unknown
from chatd.server.internals import (
    Unsent,
    canHalfClose,
    dropUnstarted,
    unsentBytes,
    writerFor,
)
from chatd.wire import (
    HEADER_SIZE,
    ErrorCode,
    FrameReceiver,
    FrameType,
    LeaveReason,
)
from chatd.wire.runs import messageRun, sameTypeRun

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory


log = Logger(namespace="chatd")

#: How long a closing connection may take to send what it has before it is
#: aborted (a peer that never reads would otherwise hold it open forever).
CLOSE_TIMEOUT = 10.0

#: A closing TCP connection checks this often (doubling up to 0.5 s) whether
#: the client has everything; CLOSE_TIMEOUT still bounds the whole close.
LINGER_POLL = 0.01

#: What a transport holds when it pauses its producer: Twisted's
#: ``FileDescriptor.bufferSize``.
PAUSE_THRESHOLD = 64 * 1024

_TYPE_FROM = struct.Struct("!I").unpack_from
_ECHO = FrameType.ECHO
_SAY = FrameType.SAY


@implementer(IConnection, IPushProducer, IHalfCloseableProtocol)
class ChatProtocol(FrameReceiver):
    """The server side of one chatd connection over a stream transport."""

    framesPerTurn = 64
    _producing = False
    _paused = False
    _held = 0
    _readEnded = False
    _abortCall: Any = None
    _lingerCall: Any = None
    #: Fired once the connection is gone (the service waits on it at stop).
    onClosed: Deferred | None = None
    #: Chatd frames, over any stream (the WebSocket too).
    codec = BINARY
    #: The front end a subclass is, whatever its transport (IRC).
    kind: str | None = None
    #: With --workers, whether main serves this connection itself instead
    #: of passing it to a worker (a front end workers do not build: IRC).
    servedByMain = False

    def __init__(self, factory: ChatFactory, number: int) -> None:
        self.factory = factory
        self.number = number
        hub = factory.hub
        self.callLater = hub.clock.callLater
        self.stats = hub.stats
        self.session = Session(hub)
        self.session.attach(self)
        self.peer = self.host = "?"
        self.since = hub.clock.seconds()

    # -- connection lifecycle --------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        if hasattr(peer, "host"):
            self.host = str(peer.host)
            self.peer = f"{self.host}:{peer.port}"
        else:  # a unix socket: every peer is local
            self.host = self.peer = "unix"
        transport = self.transport
        #: Which front end: "websocket" (its adapter says so), "tls", "tcp"
        #: or "unix", counted per front end in /status and /metrics.
        self.frontEnd = (
            getattr(transport, "frontEnd", None)
            or self.kind
            or (
                "unix"
                if self.host == "unix"
                else "tls"
                if ISSLTransport.providedBy(transport)
                else "tcp"
            )
        )
        self._unsent: Unsent = []
        self._send = self.write = self.makeWriter()  # type: ignore[method-assign]
        refusal = self.factory.admit(self)
        if refusal is not None:
            # Logged by the factory's admission, a flood as one summary line.
            code, why = refusal
            self.session.refuse(code, why)
            return
        self.transport.registerProducer(self, True)
        self._producing = True
        self.session.begin()
        log.info(
            "connect conn={conn} peer={peer} connections={n}",
            conn=self.number,
            peer=self.peer,
            n=len(self.factory.connections),
        )

    def makeWriter(self) -> Any:
        """How bytes go to the transport (a front end may filter them)."""
        return writerFor(self.transport, self._unsent)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.stopFraming = True
        session = self.session
        session.detach(_why(reason))
        if self in self.factory.connections:  # refused ones: admission logs
            log.info(
                "close conn={conn} peer={peer} after={secs:.1f}s: {why}",
                conn=self.number,
                peer=self.peer,
                secs=self.factory.clock.seconds() - self.since,
                why=session.ended,
            )
        for call in (self._abortCall, self._lingerCall):
            if call is not None and call.active():
                call.cancel()
        self.cancelThrottle()
        self.factory.forget(self)
        if self.onClosed is not None:
            d, self.onClosed = self.onClosed, None
            d.callback(None)

    # -- IConnection: what the session asks of its connection --------------

    def write(self, data: bytes) -> None:
        """Send now (:func:`~chatd.server.internals.writerFor`); while the
        transport has paused us, :meth:`_writeCounted` instead."""
        self._send(data)

    def _writeCounted(self, data: bytes) -> None:
        self._held += len(data)
        self._send(data)

    def _send(self, data: bytes) -> None:
        """Replaced by :func:`chatd.server.internals.writerFor` once connected."""
        self.transport.write(data)

    def backlog(self) -> int:
        """Bytes the transport holds for the client, as counted here: none
        while it takes what it is given; once it pauses us, what it held
        then (its threshold; the write that crossed it, at most one turn's
        batch, is not counted) plus every byte written since.  No Twisted
        internals, so any transport that does flow control (TCP, TLS, a
        WebSocket) gets a slow reader cut off."""
        return self._held if self._paused else 0

    def hangUp(self) -> None:
        """Close after what is queued; on TCP, a lingering close.

        Closing a socket that still has unread input makes the kernel reset
        the connection and throw away what the client has not acknowledged
        yet, the final ERROR among it, whenever a client is still sending.
        So on TCP only our side is shut (the FIN follows the queued frames),
        input is read and dropped, and the socket is closed once the client
        has acknowledged everything (or closed too, or CLOSE_TIMEOUT ends).
        """
        self.stopFraming = True
        self.cancelThrottle()
        transport = self.transport
        if self._producing:
            transport.unregisterProducer()
            self._producing = False
        # Armed first: connectionLost (which cancels it) may run inside
        # loseConnection on some transports.
        self._abortCall = self.callLater(CLOSE_TIMEOUT, self._abort)
        if self._readingThrottled or self.framesHeld:
            # Paused for fairness: a close must still see the client's end
            # (TLS waits for it).
            transport.resumeProducing()
        if canHalfClose(transport):
            transport.loseWriteConnection()  # then writeConnectionLost
        else:
            transport.loseConnection()

    def holdInput(self, hold: bool) -> None:
        self.holdFrames(hold)

    def dropUnstarted(self) -> None:
        dropped = dropUnstarted(self.transport, self._unsent)
        if dropped:
            log.info(
                "conn={conn}: {n} bytes not yet sent dropped",
                conn=self.number,
                n=dropped,
            )

    # -- IHalfCloseableProtocol (TCP) -----------------------------------

    def readConnectionLost(self) -> None:
        """The client will send nothing more: it closed, or shut its side."""
        self._readEnded = True
        if self.session.state is CLOSED:
            self.transport.loseConnection()  # lingering: it closed too
        elif self.session.keep("client closed"):
            self.transport.loseConnection()  # kept for a RESUME: no LEAVE
        else:
            # Like a disconnect without BYE, but what is queued for it still
            # goes out (a client that shut only its sending side reads on).
            self.session.close(LeaveReason.ERROR)

    def writeConnectionLost(self) -> None:
        """Everything queued went to the kernel, then our FIN: the slot is
        free (:meth:`ChatFactory.release`); close once the client has it."""
        if self.factory.release(self):
            self._linger(LINGER_POLL)
        else:
            self.transport.loseConnection()

    def _linger(self, delay: float) -> None:
        """Close once the client has acknowledged all our data (only the FIN
        may be left: a reset then loses nothing), or has closed too; until
        then, look again."""
        self._lingerCall = None
        unsent = unsentBytes(self.transport)
        if self._readEnded or unsent is None or unsent <= 1:
            self.transport.loseConnection()
        else:
            self._lingerCall = self.callLater(delay, self._linger, min(2 * delay, 0.5))

    def _abort(self) -> None:
        self._abortCall = None
        log.info("abort conn={conn}: peer did not read before close", conn=self.number)
        self.transport.abortConnection()

    # -- input -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # type: ignore[override]
        self.stats.bytesIn += len(data)
        session = self.session
        if session.state is CLOSED:
            return  # lingering: nothing more is handled, or kept
        session.activity()
        session.beginChunk()
        try:
            self.stats.framesIn += FrameReceiver.dataReceived(self, data)
        finally:
            session.endChunk()

    def _nextTurn(self) -> int:
        self.session.beginChunk()
        try:
            frames = FrameReceiver._nextTurn(self)
            self.stats.framesIn += frames
            return frames
        finally:
            self.session.endChunk()

    def _frameChunk(self, data: bytes, offset: int = 0, count: int = 0) -> int:
        offset, count = self._runs(data, offset, count)
        return FrameReceiver._frameChunk(self, data, offset, count)

    def _runs(self, data: bytes, offset: int, count: int) -> tuple[int, int]:
        """Runs of ECHO (the run is its own answer) and of plain SAY (one
        event for the run) at ``offset``, each with one call to the session.
        Whatever else comes takes the frame-by-frame path, which also gives
        the errors."""
        session = self.session
        budget = self.framesPerTurn or -1
        while len(data) - offset >= HEADER_SIZE and count != budget:
            if self.framesHeld or self.stopFraming:
                break
            ftype = _TYPE_FROM(data, offset)[0]
            left = budget - count if budget > 0 else -1
            if ftype == _ECHO:
                stop, n = sameTypeRun(data, offset, _ECHO, left)
                if not n:
                    break
                session.reply(data[offset:stop], n)
            elif ftype == _SAY and (limit := session.bulkSayLimit()):
                stop, n, messages = messageRun(
                    data,
                    offset,
                    left,
                    limit,
                    session.user.prefix,  # type: ignore[union-attr]
                )
                if not n:
                    break
                session.says(messages, n)
            else:
                break
            offset = stop
            count += n
        return offset, count

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        handler = INPUTS.get(ftype)  # chatd.server.binary.dispatch, inlined
        if handler is None:
            unknown(self.session, ftype)
        else:
            handler(self.session, payload)

    def frameTooLarge(self, ftype: int, size: int) -> None:
        self.session.close(
            LeaveReason.ERROR,
            ErrorCode.FRAME_TOO_LARGE,
            f"size {size} exceeds the maximum payload of 1016 bytes",
        )

    # -- IPushProducer (the transport tells us its buffer is full/empty) --

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._held = PAUSE_THRESHOLD
            self.write = self._writeCounted  # type: ignore[method-assign]
        self.session.outputPaused()

    def resumeProducing(self) -> None:
        self._paused = False
        self._held = 0
        self.write = self._send  # type: ignore[method-assign]
        self.session.outputResumed()

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the work."""


def _why(reason: Failure | None) -> str:
    """A connection's end as an operator reads it: no Failure repr."""
    if reason is None or reason.check(error.ConnectionDone):
        return "client closed"
    if reason.check(error.ConnectionLost):
        return "connection lost"
    return reason.getErrorMessage() or str(reason.type)
