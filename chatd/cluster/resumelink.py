"""A worker's resume seam: the main process keeps tokens, windows, history.

:class:`RemoteResumes` is the :class:`~chatd.core.resumes.IResumes` of a
``--workers`` worker.  The main process (:mod:`chatd.cluster.resumes`) is
the one authority: a token resumes once whichever worker the RESUME
reaches, a window ends once, and every room's whole history is there (a
worker does not see the messages of rooms it serves no member of).  A
worker mints a token and tells main only its digest; a RESUME, a replay
and HISTORY are questions answered on the link (ANSWER), after every
BATCH main sent before, so a replay ends exactly where this worker's
order stands when the answer is read.  Main tells the worker holding a
session when another worker took it (HANDOVER) or its window ended
(EXPIRE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster import link, resumewire
from chatd.cluster.remote import LinkLost
from chatd.core.resumes import IResumes, Last, Replay, Taken
from chatd.core.tokens import TOKEN_FORM, digest, mint
from chatd.wire.eventcodec import userFromEntry

if TYPE_CHECKING:
    from chatd.core.session import Session

log = Logger(namespace="chatd")

Send = Callable[[int, bytes], None]


class _MainWindow:
    """A detached session's window, run by main: ended by its EXPIRE."""

    def active(self) -> bool:
        return True

    def cancel(self) -> None:
        """Nothing to do here: the session's FORGET tells main."""


@implementer(IResumes)
class RemoteResumes:
    """Tokens, windows and history of the main process (module doc)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        #: user id -> this worker's session that holds its token.
        self._sessions: dict[int, Session] = {}
        self._pending: dict[int, Deferred[bytes]] = {}
        self._next = 0
        self.lost: str | None = None

    # -- IResumes -------------------------------------------------------

    def issue(self, session: Session) -> bytes:
        token, kept = mint()
        uid = session.user.id  # type: ignore[union-attr]
        self._sessions[uid] = session
        if self.lost is None:
            self._send(link.TOKEN, link.U32.pack(uid) + kept)
        return token

    def take(self, token: bytes) -> Deferred[Taken | None]:
        if not TOKEN_FORM.match(token):
            return succeed(None)
        return self._ask(link.RESUME, digest(token)).addCallback(_taken)

    def forget(self, session: Session) -> None:
        if session.user is None:
            return  # never named: no token
        uid = session.user.id
        if self._sessions.get(uid) is session:
            del self._sessions[uid]
            if self.lost is None:
                self._send(link.FORGET, link.U32.pack(uid))

    def keep(self, session: Session, window: float) -> Any:
        if self.lost is None:
            self._send(link.KEPT, link.U32.pack(session.user.id))  # type: ignore[union-attr]
        return _MainWindow()

    def replay(self, since: dict[bytes, int]) -> Deferred[Replay]:
        body = resumewire.sinceBody(since)
        return self._ask(link.REPLAY, body).addCallback(resumewire.parseReplay)

    def last(self, roomKey: bytes, count: int, before: int | None) -> Deferred[Last]:
        body = resumewire.askBody(roomKey, count, before)
        return self._ask(link.HISTORY, body).addCallback(resumewire.parseLast)

    def __len__(self) -> int:
        return len(self._sessions)

    # -- from main ------------------------------------------------------

    def message(self, kind: int, payload: bytes) -> None:
        """HANDOVER, EXPIRE or ANSWER from main."""
        if kind == link.ANSWER:
            req, body = resumewire.parseRequest(payload)
            d = self._pending.pop(req, None)
            if d is None:
                raise link.LinkError(f"ANSWER to nothing asked ({req})")
            d.callback(body)
            return
        (uid,) = link.U32.unpack_from(payload)
        if kind == link.HANDOVER:
            session = self._sessions.pop(uid, None)
            if session is not None:  # else it ended here meanwhile
                session._handOver()
        elif kind == link.EXPIRE:
            session = self._sessions.get(uid)
            if session is not None and session._window is not None:
                session._windowOver()

    def linkLost(self, why: str) -> None:
        self.lost = why
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(LinkLost(why))

    def _ask(self, kind: int, body: bytes) -> Deferred[bytes]:
        if self.lost is not None:
            return fail(LinkLost(self.lost))
        self._next = req = (self._next + 1) & 0xFFFFFFFF
        d: Deferred[bytes] = Deferred()
        self._pending[req] = d
        self._send(kind, resumewire.request(req, body))
        return d


def _taken(body: bytes) -> Taken | None:
    if not body or body[0] != resumewire.RESUMED:
        return None
    return Taken(userFromEntry(body[1:]))
