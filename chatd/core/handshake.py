"""The handshake's first step: HELLO, the password and the name.

Part of :class:`chatd.core.session.Session` (a mixin, for the size of
one module): the password through the hub's login guard (a locked address
refused unchecked, a wrong password answered late: docs/limits.md), then
the name from the roster, which may answer later (a cluster's): until it
has, the connection's later input waits, so replies keep request order.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.core.connection import CLOSED, CONNECTED, NAMED, settled
from chatd.core.rules import ErrorCode, LeaveReason, valid_name
from chatd.core.sessionparts import SessionParts

if TYPE_CHECKING:
    from chatd.core.codec import IClientCodec
    from chatd.core.connection import IConnection, State
    from chatd.core.hub import Hub
    from chatd.core.roster import User

log = Logger(namespace="chatd")


class Handshake(SessionParts):
    """HELLO for Session (its state, hub, conn, codec, reply, close)."""

    state: State
    user: User | None
    hub: Hub
    conn: IConnection
    codec: IClientCodec
    _lateAnswer: Any

    if TYPE_CHECKING:

        def _giveToken(self) -> None: ...

    def hello(self, name: bytes, password: bytes | None) -> None:
        """HELLO ``name`` (``password`` None: none given)."""
        if self.state is not CONNECTED:
            return self.error(ErrorCode.BAD_STATE, "HELLO after WELCOME")
        if self.hub.password is not None and not self._passwordAccepted(password):
            return
        if not valid_name(name):
            return self.error(ErrorCode.BAD_NAME)
        d = self.hub.roster.claim(name)
        if not settled(d):
            # A remote roster: later frames wait until it answers.
            self.conn.holdInput(True)
            d.addBoth(self._answered)
        d.addCallbacks(self._named, self._notNamed)

    def _passwordAccepted(self, password: bytes | None) -> bool:
        """Check the password (None: none given), through the hub's login
        guard if it has one (docs/limits.md: a locked address is refused
        unchecked, and a wrong password answered late, so guessing is
        slow).  On False the session is closing, or will once the delay is
        over."""
        guard = self.hub.logins
        conn = self.conn
        if guard is not None:
            locked = guard.locked(conn)
            if locked is not None:
                self.close(LeaveReason.ERROR, ErrorCode.AUTH_FAILED, locked)
                return False
        expected = self.hub.password or b""
        if password is not None and hmac.compare_digest(password, expected):
            if guard is not None:
                guard.succeeded(conn)
            return True
        delay = guard.failed(conn) if guard is not None else 0.0
        if not delay:
            self.close(LeaveReason.ERROR, ErrorCode.AUTH_FAILED)
            return False
        # Answered late: until then nothing more is read, and the delay
        # stands in for the handshake timeout.
        self.setTimeout(None)
        self.conn.holdInput(True)
        self._lateAnswer = self.hub.clock.callLater(
            delay, self.close, LeaveReason.ERROR, ErrorCode.AUTH_FAILED
        )
        return False

    def _answered(self, result: object) -> object:
        if self.state is not CLOSED:
            self.conn.holdInput(False)
        return result

    def _named(self, user: User | None) -> None:
        if user is None:
            return self.error(ErrorCode.NAME_TAKEN)
        if self.state is not CONNECTED:  # closed while the roster answered
            self.hub.roster.release(user)
            return
        self.user = user
        self.state = NAMED
        self.reply(self.codec.welcome(user))
        self._giveToken()
        log.info(
            "hello conn={conn} id={id} name={name}",
            conn=self.conn.number,
            id=user.id,
            name=user.display,
        )

    def _notNamed(self, failure: Failure) -> None:
        if self.state is CLOSED:
            return
        if failure.check(OverflowError):
            self.close(LeaveReason.ERROR, ErrorCode.SERVER_FULL, "user ids exhausted")
        else:
            self._unavailable(failure)
