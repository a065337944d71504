"""Protocol errors in the log, without letting a flood of bad frames flood it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from chatd.core.rules import ErrorCode

if TYPE_CHECKING:
    from chatd.core.session import Session

log = Logger(namespace="chatd")


class ErrorLog:
    """Log protocol errors without letting a flood of bad frames flood the log.

    The first few errors of a connection are logged (through :attr:`emit`,
    which a server may route through a summary that bounds lines across
    connections), the rest only counted and summarised when the connection
    goes away.  Refusals and failed logins are not logged here: whoever
    refused them logs them.
    """

    PER_CONNECTION = 5
    #: Errors a client's own input causes: what a flood is made of.  The
    #: others (timeouts, slow consumers, shutdown) come once a connection.
    FROM_INPUT = frozenset(
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

    def __init__(self) -> None:
        self._counts: dict[Session, int] = {}
        #: How an input error is logged; a server may summarise across
        #: connections here.
        self.emit: Callable[[Session, ErrorCode], None] = self._line

    @staticmethod
    def _line(session: Session, code: ErrorCode) -> None:
        log.info(
            "error conn={conn} code={code}", conn=session.conn.number, code=code.name
        )

    def record(self, session: Session, code: ErrorCode) -> None:
        if session not in session.hub.sessions or code is ErrorCode.AUTH_FAILED:
            return
        n = self._counts.get(session, 0) + 1
        self._counts[session] = n
        if n <= self.PER_CONNECTION:
            if code in self.FROM_INPUT:
                self.emit(session, code)
            else:
                self._line(session, code)

    def forget(self, session: Session) -> None:
        n = self._counts.pop(session, 0)
        if n > self.PER_CONNECTION:
            log.info(
                "errors conn={conn} total={n} ({m} not logged)",
                conn=session.conn.number,
                n=n,
                m=n - self.PER_CONNECTION,
            )
