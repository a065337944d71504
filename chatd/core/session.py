"""One user's session: CONNECTED -> NAMED -> ACTIVE -> CLOSED, by PROTOCOL.md.

A :class:`Session` holds every rule of the protocol (the handshake, the
text rules, the rate limit, which error wins, timeouts) and no transport
and no wire format: a front end calls its semantic inputs (:meth:`hello`,
:meth:`ready`, :meth:`say`, :meth:`whisper`, :meth:`who`, :meth:`bye`,
:meth:`echo`, :meth:`ping`, :meth:`pong`, :meth:`unknown`) and gives it an
:class:`IConnection` whose :class:`~chatd.core.codec.IClientCodec` spells
the outputs (chatd.server.binary for chatd frames).  It submits events to the
hub's sequencer and is the fan-out's :class:`~chatd.core.fanout.IRecipient`.

How it answers (replies batched per chunk of input, behind the broadcasts
sequenced before them, and flow control) is :class:`chatd.core.output.Output`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.core.codec import IClientCodec
from chatd.core.connection import (
    ACTIVE,
    CLOSED,
    CONNECTED,
    NAMED,
    IConnection,
    settled,
)
from chatd.core.events import Event, Join, Kick, Leave, Message, Messages, Whisper
from chatd.core.fanout import IRecipient
from chatd.core.handshake import Handshake
from chatd.core.limits import TokenBucket
from chatd.core.output import Output
from chatd.core.resuming import Resuming
from chatd.core.roomrequests import RoomRequests
from chatd.core.rules import ErrorCode, LeaveReason, valid_text

if TYPE_CHECKING:
    from chatd.core.hub import Hub
    from chatd.core.roster import User

log = Logger(namespace="chatd")


@implementer(IRecipient)
class Session(Output, Handshake, RoomRequests, Resuming, TimeoutMixin):
    """The rules of one connection, between a front end and the hub."""

    state = CONNECTED
    user: User | None = None
    _bucket: TokenBucket | None = None
    #: Why the session closed (an ERROR code or a LEAVE reason), for the log.
    ended: str | None = None
    _lateAnswer: Any = None

    def __init__(self, hub: Hub, conn: IConnection | None = None) -> None:
        self.hub = hub
        self.roomFanouts = {}
        self.stats = hub.stats
        self.callLater = hub.clock.callLater  # type: ignore[method-assign,assignment]
        if conn is not None:
            self.attach(conn)

    def attach(self, conn: IConnection) -> None:
        """Give the session the connection it speaks through.

        Once per session today; the session is not the connection, so a
        resumed one (docs/protocol.md, history and resume) can be attached
        to a new connection after :meth:`detach` without surgery.
        """
        self.conn = conn
        self.codec: IClientCodec = conn.codec
        self.fanout = self.hub.fanoutFor(self.codec)
        # The fan-out writes to every recipient every turn: skip a call by
        # binding the connection's write (it changes when output pauses).
        self.write = conn.write  # type: ignore[method-assign]

    # -- from the front end ----------------------------------------------

    def begin(self) -> None:
        """The connection was admitted: the handshake clock starts."""
        self.write = self.conn.write  # type: ignore[method-assign]
        self.hub.sessions[self] = None
        self.setTimeout(self.hub.config.handshake_timeout or None)

    def activity(self) -> None:
        """Bytes arrived (even part of a frame)."""
        if self.state is ACTIVE:
            self.resetTimeout()

    def bulkSayLimit(self) -> int:
        """The longest SAY text a run of plain SAYs may carry right now, or 0
        when SAYs must take :meth:`frameReceived` (not ACTIVE, rate-limited,
        replies waiting): the bulk path's share of the SAY rules."""
        if self.state is ACTIVE and self._bucket is None and not self._batch:
            return self.user.max_text  # type: ignore[union-attr]
        return 0

    def says(self, messages: bytes, count: int) -> None:
        """A run of ``count`` SAYs that passed the SAY rules (checked by the
        front end, under :meth:`bulkSayLimit`), already as MESSAGE frames."""
        self.stats.messages += count
        self.fanout.spoke(self)
        self._submit(Messages(messages, count))

    def detach(self, why: str = "disconnected") -> None:
        """The connection is gone; ``why`` (for the log) if we did not end
        it.  The user leaves now (LEAVE ``error``); a resume window would
        keep the session here instead, to be attached again."""
        if self.keep(why):
            return
        self._disconnected = True
        self.setTimeout(None)
        if self._lateAnswer is not None and self._lateAnswer.active():
            self._lateAnswer.cancel()
        if self.state is not CLOSED:
            self.close(LeaveReason.ERROR)
            self.ended = why
        self.hub.sessions.pop(self, None)
        self.hub.errorLog.forget(self)

    def timeoutConnection(self) -> None:
        if self.state is ACTIVE:
            self.close(LeaveReason.TIMEOUT, ErrorCode.IDLE_TIMEOUT)
        else:
            self.close(LeaveReason.ERROR, ErrorCode.HANDSHAKE_TIMEOUT)

    # -- closing -----------------------------------------------------------

    def close(
        self,
        reason: LeaveReason,
        error: ErrorCode | None = None,
        text: str | None = None,
        drain: bool = True,
    ) -> None:
        """Begin to close: free the name, LEAVE if active, ERROR, hang up.

        With ``drain`` the client first gets what was sequenced before this
        point; its front end sends that before it closes.
        """
        if self.state is CLOSED:
            return
        self._endResume()
        self.ended = error.name if error is not None else reason.value
        # A resumed user is active to the others from its WELCOME on.
        wasActive = self.state is ACTIVE or self._since is not None
        if not self._disconnected:
            self._flushBatch()  # in the current state, so order is kept
        self.state = CLOSED
        self.setTimeout(None)
        user = self.user
        if user is not None:
            self.hub.roster.release(user)
        if wasActive:
            self.fanout.remove(self, drain=drain and not self._disconnected)
            self.hub.rooms.depart(self, drain and not self._disconnected)
            self._submit(Leave(user, reason), hold=False)  # type: ignore[arg-type]
        if self._disconnected:
            self._batch = None
        else:
            if error is not None:
                self._countError(error)
                self.reply(self.codec.error(error, text))
            self._flushBatch()
            self.conn.hangUp()
        if user is not None:
            log.info(
                "leave conn={conn} id={id} name={name} reason={reason}",
                conn=self.conn.number,
                id=user.id,
                name=user.display,
                reason=reason.value,
            )

    def refuse(self, code: ErrorCode, text: str | None = None) -> None:
        """Turn a new connection away with a fatal ERROR (full, maintenance)."""
        self.close(LeaveReason.ERROR, code, text)

    # -- inputs: what the client asked ---------------------------------------

    def echo(self, payload: bytes) -> None:
        self.reply(self.codec.echo(payload))

    def ping(self, payload: bytes) -> None:
        self.reply(self.codec.pong(payload))

    def pong(self) -> None:
        """An answer to our PING, or unsolicited: activity, nothing more."""

    def unknown(self, text: str) -> None:
        """A request this protocol does not have (``text`` says which)."""
        self.error(ErrorCode.UNKNOWN_TYPE, text)

    def ready(self) -> None:
        if self.state is not NAMED:
            return self.error(ErrorCode.BAD_STATE, "READY needs a WELCOME first, once")
        # The WELCOME goes out before the JOIN the fan-out will send.
        self._activate()
        if self._since is not None:
            return self._readyResumed()
        user = self.user
        self.fanout.expect(self)
        self.hub.rooms.arrive(self)
        self._submit(Join(user))  # type: ignore[arg-type]
        if self._outputBlocked:  # its transport was already full: not live
            self.fanout.pause(self)
        log.info(
            "join conn={conn} id={id} name={name} active={n}",
            conn=self.conn.number,
            id=user.id,  # type: ignore[union-attr]
            name=user.display,  # type: ignore[union-attr]
            n=len(self.fanout),
        )

    def _activate(self) -> None:
        """ACTIVE: the idle clock, the rate limit (a resumed user keeps its
        own bucket), and the replies so far written first."""
        self.state = ACTIVE
        config = self.hub.config
        self.setTimeout(config.idle_timeout or None)
        if self._bucket is None and config.rate_limit:
            self._bucket = TokenBucket(
                config.rate_limit, config.rate_burst, self.hub.clock.seconds
            )
        self._flushBatch()

    def say(self, text: bytes) -> None:
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        user: User = self.user  # type: ignore[assignment]
        # The common case in one test; anything else takes the checks in order.
        if not (
            len(text) <= user.max_text and self._bucket is None and valid_text(text)
        ) and not (self._textAllowed(text) and self._withinRate()):
            return
        if self._batch:
            # Replies already produced in this chunk precede the MESSAGE.
            self._flushBatch()
        self.stats.messages += 1
        self.fanout.spoke(self)
        self._submit(Message(user, text))

    def who(self) -> None:
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        for frame in self.codec.users(self.hub.replica):
            self.reply(frame)

    def whisper(self, name: bytes, text: bytes | None) -> None:
        """WHISPER ``text`` to ``name`` (``text`` None: the request had no
        text part at all)."""
        if self.state is not ACTIVE:
            return self.error(ErrorCode.NOT_READY)
        if text is None:
            return self.error(ErrorCode.BAD_TEXT, "WHISPER is name.text")
        if not self._textAllowed(text):
            return
        target = self.hub.replica.find(name) if name else None
        if target is None:
            return self.error(ErrorCode.NO_SUCH_USER)
        if not self._withinRate():
            return
        self._submit(Whisper(self.user, target, text))  # type: ignore[arg-type]

    def bye(self) -> None:
        self.close(LeaveReason.QUIT)

    def _textAllowed(self, text: bytes) -> bool:
        """The text rules of SAY and WHISPER: BAD_TEXT first, then TOO_LONG."""
        if not valid_text(text):
            self.error(ErrorCode.BAD_TEXT)
            return False
        limit = self.user.max_text  # type: ignore[union-attr]
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

    def _submit(self, event: Event, hold: bool = True) -> None:
        """Sequence ``event``; if the sequencer cannot be reached, say so.

        A remote sequencer answers later: until it has (and this process
        has the event), the connection's later frames wait, so replies keep
        request order, the sender's own MESSAGE or JOIN first, and WHO
        lists a user who has just joined, as in one process.
        """
        now = self.hub.sequenceNow
        if now is not None:
            now(event)  # one process: sequenced and delivered already
            return
        d = self.hub.sequencer.submit(event)
        done = settled(d)
        if done and not isinstance(d.result, Failure):
            return  # sequenced already: the usual, local case
        d.addErrback(self._unavailable)
        if not done and hold:
            self.conn.holdInput(True)
            d.addBoth(self._answered)

    def _unavailable(self, failure: Failure) -> None:
        log.warn(
            "conn={conn}: chat backend unavailable: {why}",
            conn=self.conn.number,
            why=failure.getErrorMessage(),
        )
        if self.state is not CLOSED:
            self.error(ErrorCode.UNAVAILABLE)

    def _countError(self, code: ErrorCode) -> None:
        self.stats.errors[code.name] += 1
        self.hub.errorLog.record(self, code)

    def _active(self) -> bool:
        """Whether the request may go on: NOT_READY before ACTIVE."""
        if self.state is ACTIVE:
            return True
        self.error(ErrorCode.NOT_READY)
        return False

    # -- IRecipient ----------------------------------------------------------

    def slowConsumer(self) -> None:
        """Cut off: what the client has not started to receive is dropped
        (docs/protocol.md), so if it reads again its ERROR comes next."""
        self._batch = None if self._batch is None else []
        self.conn.dropUnstarted()
        self.close(LeaveReason.SLOW, ErrorCode.SLOW_CONSUMER, drain=False)

    def targeted(self, event: Event) -> None:
        if type(event) is Kick:
            self.close(LeaveReason.KICKED, ErrorCode.KICKED)
        elif self.state is ACTIVE:
            self.reply(self.codec.event(event))
