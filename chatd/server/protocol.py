"""One connection: CONNECTED -> NAMED -> ACTIVE -> CLOSED, by PROTOCOL.md.

:class:`ChatProtocol` turns frames into actions on the shared state that
:class:`ChatFactory` holds (the roster, the sequencer and the fan-out).  It
is the transport's push producer, so the fan-out learns when this client's
socket buffer is full, and it is the fan-out's :class:`IRecipient`.

Replies produced while one chunk of input is handled are collected and
written with one ``write`` at the end of the chunk.
"""

from __future__ import annotations

import enum
import hmac
import itertools
from typing import TYPE_CHECKING

from twisted.internet import protocol, tcp
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from chatd.core.fanout import FanOut, IRecipient, ISequencer, LocalSequencer
from chatd.core.fanout import transportBacklog as _transportBacklog
from chatd.core.limits import TokenBucket
from chatd.core.roster import Roster, User
from chatd.core.stats import Stats
from chatd.server.admission import Admission, addressKey
from chatd.server.internals import unsentBytes, writerFor
from chatd.server.logsummary import LogSummary, keepRotated
from chatd.wire import (
    HEADER,
    HEADER_SIZE,
    SAY_HEADER_NOISE,
    ErrorCode,
    FrameReceiver,
    FrameType,
    LeaveReason,
    encode,
    error_frame,
    plainTexts,
    valid_name,
    valid_text,
)

if TYPE_CHECKING:
    from chatd.server.config import Config

log = Logger(namespace="chatd")

#: How long a closing connection may take to send what it has before it is
#: aborted (a peer that never reads would otherwise hold it open forever).
CLOSE_TIMEOUT = 10.0

#: A closing TCP connection checks this often (doubling up to 0.5 s) whether
#: the client has everything; CLOSE_TIMEOUT still bounds the whole close.
LINGER_POLL = 0.01

_PACK = HEADER.pack
_MESSAGE = FrameType.MESSAGE
_SAY = FrameType.SAY
_ECHO = FrameType.ECHO
_PONG = FrameType.PONG


class State(enum.Enum):
    CONNECTED = "connected"
    NAMED = "named"
    ACTIVE = "active"
    CLOSED = "closed"


CONNECTED, NAMED, ACTIVE, CLOSED = State


@implementer(IRecipient, IPushProducer, IHalfCloseableProtocol)
class ChatProtocol(FrameReceiver, TimeoutMixin):
    """The server side of one chatd connection."""

    framesPerTurn = 64
    state = CONNECTED
    user: User | None = None
    _batch: list[bytes] | None = None
    _producing = False
    _outputBlocked = False
    _overBacklog = False
    _disconnected = False
    _readEnded = False
    _abortCall = None
    _lingerCall = None
    _bucket: TokenBucket | None = None
    #: Fired once the connection is gone (the service waits on it at stop).
    onClosed: Deferred | None = None

    def __init__(self, factory: ChatFactory, number: int) -> None:
        self.factory = factory
        self.number = number
        self.callLater = factory.clock.callLater
        self.stats = factory.stats
        self.fanout = factory.fanout
        self.sequencer = factory.sequencer
        self.roster = factory.roster
        self.peer = "?"
        self.since = factory.clock.seconds()

    # -- connection lifecycle --------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        if hasattr(peer, "host"):
            self.host = str(peer.host)
            self.peer = f"{self.host}:{peer.port}"
        else:  # a unix socket: every peer is local
            self.host = self.peer = "unix"
        # Used by the fan-out once per turn, and for replies: send at once.
        self.write = writerFor(self.transport)
        refusal = self.factory.admit(self)
        if refusal is not None:
            # Logged by the factory's admission, a flood as one summary line.
            code, why = refusal
            self.close(LeaveReason.ERROR, code, why)
            return
        self.transport.registerProducer(self, True)
        self._producing = True
        self.setTimeout(self.factory.config.handshake_timeout or None)
        log.info(
            "connect conn={conn} peer={peer} connections={n}",
            conn=self.number,
            peer=self.peer,
            n=len(self.factory.connections),
        )

    def connectionLost(self, reason: object = None) -> None:
        self._disconnected = True
        if self.state is not CLOSED:
            self.close(LeaveReason.ERROR)
        for call in (self._abortCall, self._lingerCall):
            if call is not None and call.active():
                call.cancel()
        self.factory.forget(self)
        if self.onClosed is not None:
            d, self.onClosed = self.onClosed, None
            d.callback(None)

    def timeoutConnection(self) -> None:
        if self.state is ACTIVE:
            self.close(LeaveReason.TIMEOUT, ErrorCode.IDLE_TIMEOUT)
        else:
            self.close(LeaveReason.ERROR, ErrorCode.HANDSHAKE_TIMEOUT)

    def close(
        self,
        reason: LeaveReason,
        error: ErrorCode | None = None,
        text: str | None = None,
        drain: bool = True,
    ) -> None:
        """Begin to close: free the name, LEAVE if active, ERROR, hang up.

        With ``drain`` the client first gets what was sequenced before this
        point; the transport sends it before it closes.
        """
        if self.state is CLOSED:
            return
        was_active = self.state is ACTIVE
        if not self._disconnected:
            self._flushBatch()  # in the current state, so order is kept
        self.state = CLOSED
        self.stopFraming = True
        self.setTimeout(None)
        self.cancelThrottle()
        user = self.user
        if user is not None:
            self.roster.release(user)
            del self.factory.byUser[user]
        if was_active:
            self.fanout.remove(self, drain=drain and not self._disconnected)
            self.sequencer.sequence(user.leave(reason.value))
        if self._disconnected:
            self._batch = None
        else:
            if error is not None:
                self._countError(error)
                self._reply(error_frame(error, text))
            self._flushBatch()
            if self._producing:
                self.transport.unregisterProducer()
            # Armed first: connectionLost (which cancels it) may run inside
            # loseConnection on some transports.
            self._abortCall = self.callLater(CLOSE_TIMEOUT, self._abort)
            self._hangUp()
        if user is not None:
            log.info(
                "leave conn={conn} id={id} name={name} reason={reason}",
                conn=self.number,
                id=user.id,
                name=user.display,
                reason=reason.value,
            )

    def _hangUp(self) -> None:
        """Close after what is queued; on TCP, a lingering close.

        Closing a socket that still has unread input makes the kernel reset
        the connection and throw away what the client has not acknowledged
        yet, the final ERROR among it, whenever a client is still sending.
        So on TCP only our side is shut (the FIN follows the queued frames),
        input is read and dropped, and the socket is closed once the client
        has acknowledged everything (or closed too, or CLOSE_TIMEOUT ends).
        """
        transport = self.transport
        if self._readingThrottled:
            # Paused for fairness: a close must still see the client's end
            # (TLS waits for it).
            transport.resumeProducing()
        if isinstance(transport, tcp.Connection):
            transport.loseWriteConnection()  # then writeConnectionLost
        else:
            transport.loseConnection()

    # -- IHalfCloseableProtocol (TCP) -----------------------------------

    def readConnectionLost(self) -> None:
        """The client will send nothing more: it closed, or shut its side."""
        self._readEnded = True
        if self.state is CLOSED:
            self.transport.loseConnection()  # lingering: it closed too
        else:
            # Like a disconnect without BYE, but what is queued for it still
            # goes out (a client that shut only its sending side reads on).
            self.close(LeaveReason.ERROR)

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

    def dataReceived(self, data: bytes) -> None:
        self.stats.bytesIn += len(data)
        if self.state is CLOSED:
            return  # lingering: nothing more is handled, or kept
        if self.state is ACTIVE:
            self.resetTimeout()
        self._batch = []
        try:
            self.stats.framesIn += FrameReceiver.dataReceived(self, data)
        finally:
            self._endChunk()

    def _endChunk(self) -> None:
        """Write the chunk's replies; cut off a client over its backlog."""
        self._flushBatch()
        self._batch = None
        if self._overBacklog and self.state is not CLOSED:
            self.slowConsumer()

    def _nextTurn(self) -> int:
        self._batch = []
        try:
            frames = FrameReceiver._nextTurn(self)
            self.stats.framesIn += frames
            return frames
        finally:
            self._endChunk()

    def _frameChunk(self, data: bytes, offset: int = 0, count: int = 0) -> int:
        if self.state is ACTIVE and self._bucket is None and not self._batch:
            offset, count = self._says(data, offset, count)
        return FrameReceiver._frameChunk(self, data, offset, count)

    def _says(self, data: bytes, offset: int, count: int) -> tuple[int, int]:
        """Handle the run of plain SAY frames at ``offset`` at once.

        Busy chat arrives as runs of SAY.  Each becomes its MESSAGE with one
        slice and a header shared by texts of one size, the run's texts are
        checked in one C call (:func:`plainTexts`), and the run is sequenced
        as one blob.  The run ends at the first frame that is not a SAY of
        1 to ``max_text`` bytes; if any text in it is not plain ASCII, the
        whole run is left to the frame-by-frame path, which also gives the
        errors.  Returns the new offset and frame count.
        """
        user = self.user
        prefix = user.prefix
        room = len(prefix)
        limit = user.max_text
        budget = self.framesPerTurn or -1
        unpack_from = self._unpack_from
        end = len(data)
        start, frames = offset, count
        parts: list[bytes] = []
        append = parts.append
        noise = 0
        lastSize = head = headNoise = None
        while end - offset >= HEADER_SIZE and frames != budget:
            ftype, size = unpack_from(data, offset)
            if ftype != _SAY or not 0 < size <= limit:
                break
            stop = offset + HEADER_SIZE + size
            if stop > end:
                break
            if size != lastSize:
                lastSize = size
                head = _PACK(_MESSAGE, room + size) + prefix
                headNoise = SAY_HEADER_NOISE[size]
            append(head)
            append(data[offset + HEADER_SIZE : stop])
            noise += headNoise
            offset = stop
            frames += 1
        if frames == count or not plainTexts(data[start:offset], noise):
            return start, count
        self.stats.messages += frames - count
        self.sequencer.sequence(b"".join(parts), frames=frames - count)
        return offset, frames

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        handler = _HANDLERS.get(ftype)
        if handler is None:
            self.error(
                ErrorCode.UNKNOWN_TYPE, f"type {ftype} not accepted from clients"
            )
        else:
            handler(self, payload)

    def frameTooLarge(self, ftype: int, size: int) -> None:
        self.close(
            LeaveReason.ERROR,
            ErrorCode.FRAME_TOO_LARGE,
            f"size {size} exceeds the maximum payload of 1016 bytes",
        )

    # -- frame handlers --------------------------------------------------

    def do_ECHO(self, payload: bytes) -> None:
        self._reply(_PACK(_ECHO, len(payload)) + payload)

    def do_PING(self, payload: bytes) -> None:
        self._reply(_PACK(_PONG, len(payload)) + payload)

    def do_PONG(self, payload: bytes) -> None:
        """An answer to our PING, or unsolicited: activity, nothing more."""

    def do_HELLO(self, payload: bytes) -> None:
        if self.state is not CONNECTED:
            return self.error(ErrorCode.BAD_STATE, "HELLO after WELCOME")
        name, dot, password = payload.partition(b".")
        expected = self.factory.password
        if expected is not None:
            # Login backoff (chatd.server.admission): a locked address is
            # refused unchecked; a wrong password locks it, answered late.
            admission = self.factory.admission
            locked = admission.locked(self)
            if locked is not None:
                return self.close(LeaveReason.ERROR, ErrorCode.AUTH_FAILED, locked)
            if not (dot and hmac.compare_digest(password, expected)):
                delay = admission.failed(self)
                if not delay:
                    return self.close(LeaveReason.ERROR, ErrorCode.AUTH_FAILED)
                return admission.answerLater(
                    self,
                    delay,
                    lambda: self.close(LeaveReason.ERROR, ErrorCode.AUTH_FAILED),
                )
            admission.succeeded(self)
        if not valid_name(name):
            return self.error(ErrorCode.BAD_NAME)
        try:
            user = self.roster.claim(name)
        except OverflowError:
            return self.close(
                LeaveReason.ERROR, ErrorCode.SERVER_FULL, "user ids exhausted"
            )
        if user is None:
            return self.error(ErrorCode.NAME_TAKEN)
        self.user = user
        self.factory.byUser[user] = self
        self.state = NAMED
        self._reply(user.welcome())
        log.info(
            "hello conn={conn} id={id} name={name}",
            conn=self.number,
            id=user.id,
            name=user.display,
        )

    def do_READY(self, payload: bytes) -> None:
        if self.state is not NAMED:
            return self.error(ErrorCode.BAD_STATE, "READY needs a WELCOME first, once")
        self.state = ACTIVE
        config = self.factory.config
        self.setTimeout(config.idle_timeout or None)
        if config.rate_limit:
            self._bucket = TokenBucket(
                config.rate_limit, config.rate_burst, self.factory.clock.seconds
            )
        user = self.user
        self.roster.activate(user)
        # The WELCOME must go out before the JOIN the fan-out will send.
        self._flushBatch()
        self.sequencer.sequence(user.join(), joining=self)
        if self._outputBlocked:  # its transport was already full: not live
            self.fanout.pause(self)
        log.info(
            "join conn={conn} id={id} name={name} active={n}",
            conn=self.number,
            id=user.id,
            name=user.display,
            n=len(self.fanout),
        )

    def do_SAY(self, text: bytes) -> None:
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        user = self.user
        # The common case in one test; anything else takes the checks in order.
        if not (
            len(text) <= user.max_text and self._bucket is None and valid_text(text)
        ) and not (self._textAllowed(text) and self._withinRate()):
            return
        if self._batch:
            # Replies already produced in this chunk precede the MESSAGE.
            self._flushBatch()
        self.stats.messages += 1
        prefix = user.prefix
        self.sequencer.sequence(
            _PACK(_MESSAGE, len(prefix) + len(text)) + prefix + text
        )

    def do_WHO(self, payload: bytes) -> None:
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        for frame in self.roster.whoFrames():
            self._reply(frame)

    def do_WHISPER(self, payload: bytes) -> None:
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        name, dot, text = payload.partition(b".")
        if not dot:
            return self.error(ErrorCode.BAD_TEXT, "WHISPER is name.text")
        if not self._textAllowed(text):
            return
        target = self.roster.findActive(name) if name else None
        if target is None:
            return self.error(ErrorCode.NO_SUCH_USER)
        if not self._withinRate():
            return
        self.factory.byUser[target]._reply(
            encode(FrameType.WHISPERED, self.user.prefix + text)
        )

    def _textAllowed(self, text: bytes) -> bool:
        """The text rules of SAY and WHISPER: BAD_TEXT first, then TOO_LONG."""
        if not valid_text(text):
            self.error(ErrorCode.BAD_TEXT)
            return False
        limit = self.user.max_text
        if len(text) > limit:
            self.error(ErrorCode.TOO_LONG, f"at most {limit} bytes of text")
            return False
        return True

    def _withinRate(self) -> bool:
        """Flood control (--rate-limit): a message beyond it is not delivered."""
        if self._bucket is None or self._bucket.take():
            return True
        self.error(ErrorCode.RATE_LIMITED)
        return False

    def do_BYE(self, payload: bytes) -> None:
        self.close(LeaveReason.QUIT)

    # -- output ----------------------------------------------------------

    def error(self, code: ErrorCode, text: str | None = None) -> None:
        """A non-fatal ERROR: the connection stays open."""
        self._countError(code)
        self._reply(error_frame(code, text))

    def _countError(self, code: ErrorCode) -> None:
        self.stats.errors[code.name] += 1
        self.factory.errorLog.record(self, code)

    def _reply(self, frame: bytes) -> None:
        if self._batch is not None:
            self._batch.append(frame)
        else:
            self._writeDirect(frame, 1)

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
            self.fanout.send(self, data)
        else:
            self.write(data)
        if (
            self._outputBlocked
            and self.state is not CLOSED
            and self.fanout.backlog(self) > self.fanout.maxBacklog
        ):
            if self._batch is None:
                self.slowConsumer()
            else:
                # Inside our own frame handler: closing here would pull the
                # state from under it (a LEAVE before its MESSAGE, a close
                # within close).  Cut off once the chunk is handled.
                self._overBacklog = True

    # -- IRecipient ------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Replaced by :func:`chatd.server.internals.writerFor` once connected."""
        self.transport.write(data)

    def transportBacklog(self) -> int:
        return _transportBacklog(self.transport)

    def slowConsumer(self) -> None:
        self.close(LeaveReason.SLOW, ErrorCode.SLOW_CONSUMER, drain=False)

    # -- IPushProducer (the transport tells us its buffer is full/empty) --

    def pauseProducing(self) -> None:
        self._outputBlocked = True
        self.fanout.pause(self)

    def resumeProducing(self) -> None:
        self._outputBlocked = False
        self.fanout.resume(self)

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the work."""


_HANDLERS = {
    int(t): getattr(ChatProtocol, "do_" + t.name)
    for t in FrameType
    if hasattr(ChatProtocol, "do_" + t.name)
}


class ErrorLog:
    """Log protocol errors without letting a flood of bad frames flood the log.

    Errors a client's input causes go through a
    :class:`~chatd.server.logsummary.LogSummary`: the first few of each code
    are logged, then one summary line per interval, however many
    connections or addresses send them.  Refusals and login failures are
    logged by :class:`~chatd.server.admission.Admission`; the other fatal
    errors (timeouts, slow consumers, shutdown) come once per connection.
    """

    SUMMARISED = frozenset(
        {
            ErrorCode.FRAME_TOO_LARGE,
            ErrorCode.UNKNOWN_TYPE,
            ErrorCode.BAD_NAME,
            ErrorCode.NAME_TAKEN,
            ErrorCode.NOT_READY,
            ErrorCode.BAD_STATE,
            ErrorCode.BAD_TEXT,
            ErrorCode.TOO_LONG,
            ErrorCode.NO_SUCH_USER,
            ErrorCode.RATE_LIMITED,
        }
    )

    def __init__(self, logs: LogSummary, admitted: dict) -> None:
        self.logs = logs
        self.admitted = admitted

    def record(self, proto: ChatProtocol, code: ErrorCode) -> None:
        if proto not in self.admitted or code is ErrorCode.AUTH_FAILED:
            return  # logged by the admission
        if code not in self.SUMMARISED:
            log.info("error conn={conn} code={code}", conn=proto.number, code=code.name)
            return
        self.logs.event(
            "protocol errors " + code.name + " from {addresses}",
            addressKey(proto.host),
            "error conn={conn} peer={peer} code={code}",
            conn=proto.number,
            peer=proto.peer,
            code=code.name,
        )


class ChatFactory(protocol.Factory):
    """What every connection of one chatd process shares."""

    noisy = False

    def __init__(
        self,
        config: Config,
        clock: object = None,
        sequencer: ISequencer | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config
        self.clock = clock
        self.password = config.password
        self.stats = Stats()
        self.roster = Roster()
        self.fanout = FanOut(clock.callLater, config.max_backlog)
        self.sequencer = sequencer if sequencer is not None else LocalSequencer()
        self.sequencer.subscribe(self.fanout)
        self.connections: dict[ChatProtocol, None] = {}
        # Connections that have sent everything and their FIN, and linger
        # only to read what the client still sends: not counted in limits.
        self._released: set[ChatProtocol] = set()
        self.byUser: dict[User, ChatProtocol] = {}
        # Abuse limits and bounded logging (chatd.server.admission).
        self.admission = Admission(config, clock)
        self.perAddress = self.admission.perAddress
        self.errorLog = ErrorLog(self.admission.logs, self.connections)
        #: When set (MAINTENANCE, SHUTDOWN), new connections get this error.
        self.refusal: ErrorCode | None = None
        self._numbers = itertools.count(1)

    def startFactory(self) -> None:
        # Logging has begun by now: bound twistd's rotated logs (--log-keep).
        keepRotated(self.config.log_keep)

    def stopFactory(self) -> None:
        # No longer listening: write the pending log summaries now.
        self.admission.logs.flushAll()

    def buildProtocol(self, addr: object) -> ChatProtocol:
        return ChatProtocol(self, next(self._numbers))

    def admit(self, proto: ChatProtocol) -> tuple[ErrorCode, str | None] | None:
        """Count a new connection in, or say which fatal error refuses it."""
        self.stats.connectionsTotal += 1
        # State, --max-clients and the per-address limits: chatd.server.admission.
        refusal = self.admission.admit(
            proto.host,
            proto.peer,
            self.refusal,
            len(self.connections) - len(self._released),
        )
        if refusal is None:
            self.connections[proto] = None
        return refusal

    def release(self, proto: ChatProtocol) -> bool:
        """``proto`` has sent all it will: it no longer counts against
        --max-clients and --max-per-ip while it lingers.

        Returns False when ``max_clients`` connections linger already: then
        it should close at once, so that clients which leave and keep their
        sockets open cannot hold descriptors without bound.
        """
        if proto not in self.connections:
            return False
        if proto not in self._released:
            if len(self._released) >= self.config.max_clients:
                return False
            self._released.add(proto)
            self.admission.release(proto.host)
        return True

    def forget(self, proto: ChatProtocol) -> None:
        if proto in self.connections:
            del self.connections[proto]
            if proto in self._released:
                self._released.discard(proto)
            else:
                self.admission.release(proto.host)
        self.admission.forget(proto)

    def applyConfig(self, config: Config) -> None:
        """Take a reloaded configuration; connections read it at use."""
        self.config = config
        self.password = config.password
        self.fanout.maxBacklog = config.max_backlog
        self.admission.applyConfig(config)
        keepRotated(config.log_keep)

    def closeAll(self, reason: LeaveReason, code: ErrorCode) -> Deferred:
        """Close every connection with ERROR ``code`` (all local users go at
        once: none of them gets a LEAVE of the others).  Fires once every
        connection is gone; :meth:`abortAll` hurries the stragglers."""
        conns = list(self.connections)
        closed = []
        for proto in conns:
            proto.onClosed = Deferred()
            closed.append(proto.onClosed)
        self.fanout.removeAll()
        for proto in conns:
            proto.close(reason, code)
        return DeferredList(closed).addCallback(lambda _: len(conns))

    def abortAll(self) -> int:
        """Abort every connection still open; returns how many."""
        left = list(self.connections)
        for proto in left:
            proto.transport.abortConnection()
        return len(left)

    def snapshot(self) -> dict:
        return self.stats.snapshot(
            connections=len(self.connections),
            active=len(self.fanout),
            deliveries=self.fanout.deliveries,
            broadcastBytes=self.fanout.bytesOut,
        )

    def notice(self, code: str, text: str) -> int:
        """NOTICE ``code.text`` to every open connection (maintenance,
        resumed), mid-handshake ones too: they may still finish it.

        Sent as a reply, so it follows what each was already sent.
        Returns how many connections got it.
        """
        frame = encode(FrameType.NOTICE, f"{code}.{text}".encode())
        users = [p for p in self.connections if p.state is not CLOSED]
        for proto in users:
            proto._reply(frame)
        return len(users)

    def kick(self, name: str) -> bool:
        """An operator removes user ``name``: ERROR KICKED, LEAVE kicked."""
        for user, proto in list(self.byUser.items()):
            if user.name.lower() == name.encode().lower():
                proto.close(LeaveReason.KICKED, ErrorCode.KICKED)
                return True
        return False
