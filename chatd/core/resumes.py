"""Where a session's tokens, window and history are kept: the resume seam.

:mod:`chatd.core.resuming` (the session's RESUMABLE, RESUME, SINCE,
HISTORY and detached state) asks an :class:`IResumes` for everything that
outlives one connection.  In one process that is :class:`LocalResumes`:
the token registry, a timer on the reactor and this process's history,
answered at once.  With ``--workers`` a worker's sessions ask the main
process (:mod:`chatd.cluster.resumelink`), which is the one authority for
tokens and windows and keeps every room's whole history; its answers come
later, so every question returns a Deferred (fired at once here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from chatd.core.connection import ACTIVE
from chatd.core.tokens import Tokens, digest

if TYPE_CHECKING:
    from chatd.core.events import Event
    from chatd.core.history import IHistoryStore
    from chatd.core.limits import TokenBucket
    from chatd.core.roster import User
    from chatd.core.session import Session

#: room key -> (the HISTORY_GONE number or None, the (event, first frame) held).
Replay = dict[bytes, tuple["int | None", list[tuple["Event", int]]]]
#: HISTORY's answer: (event, first frame, frame after the last), oldest first.
Last = list[tuple["Event", int, int]]


@dataclass(frozen=True)
class Taken:
    """A RESUME's user, taken from wherever it was kept."""

    user: User
    #: its rate bucket when it stays in this process (a user's, not a
    #: connection's); None: a fresh one.
    bucket: TokenBucket | None = None


class IResumes(Interface):
    """Tokens, detached users' windows and history, for resumable sessions."""

    def issue(session: Session) -> bytes:
        """A fresh token for ``session`` (its earlier one is spent)."""

    def take(token: bytes) -> Deferred[Taken | None]:
        """Spend ``token``: its user, the session holding it stopped
        silently; None if it resumes nothing."""

    def forget(session: Session) -> None:
        """``session`` ended for good: its token and window go."""

    def keep(session: Session, window: float) -> Any:
        """``session`` is detached: a call (``active``/``cancel``) that
        ends it after ``window`` seconds unless resumed."""

    def replay(since: dict[bytes, int]) -> Deferred[Replay]:
        """Each room's events after its number; fired in the turn the
        caller goes live, so replay and live meet exactly."""

    def last(roomKey: bytes, count: int, before: int | None) -> Deferred[Last]:
        """HISTORY: the room's last ``count`` frames (before ``before``)."""

    def __len__() -> int:
        """Tokens live: resumable users, attached or detached (/status)."""


class IResumeJournal(Interface):
    """Where one process writes its resumable users down, so that a crash
    does not end them (--history-db: chatd.server.resumejournal)."""

    def kept(session: Session, digest: bytes, deadline: float) -> None:
        """``session`` is resumable by the token whose SHA-256 is
        ``digest``, until ``deadline`` (wall clock seconds; 0: attached)."""

    def spent(session: Session) -> None:
        """``session`` is resumable no more (resumed, ended, left)."""


def resumeFigures(
    window: float, detached: int, tokens: int, history: IHistoryStore | None
) -> dict[str, object]:
    """/status's ``resume`` block: one shape whichever process keeps the
    tokens and history, so an operator's tooling reads one shape."""
    return {
        "window": window,
        "detached": detached,
        "tokens": tokens,
        "history_rooms": history.rooms if history else 0,
        "history_events": len(history) if history else 0,
        "history_bytes": history.heldBytes if history else 0,
    }


@implementer(IResumes)
class LocalResumes:
    """One process: the registry, the reactor's timers, the history here."""

    def __init__(self, clock: Any, history: IHistoryStore) -> None:
        self.clock = clock
        self.history = history
        self.tokens = Tokens()
        #: Writes the resumable users down (--history-db); None: memory only.
        self.journal: IResumeJournal | None = None

    @property
    def limit(self) -> int:
        return self.history.limit

    def issue(self, session: Session) -> bytes:
        token = self.tokens.issue(session)
        if self.journal is not None:
            self.journal.kept(session, digest(token), 0.0)
        return token

    def take(self, token: bytes) -> Deferred[Taken | None]:
        old = self.tokens.take(token)
        if old is None or old.state is not ACTIVE or old.user is None:
            return succeed(None)
        taken = Taken(old.user, old._bucket)
        old._handOver()
        return succeed(taken)

    def forget(self, session: Session) -> None:
        self.tokens.forget(session)
        if self.journal is not None:
            self.journal.spent(session)

    def keep(self, session: Session, window: float) -> Any:
        kept = self.tokens.digestOf(session)
        if self.journal is not None and kept is not None:
            self.journal.kept(session, kept, self.clock.seconds() + window)
        return self.clock.callLater(window, session._windowOver)

    def replay(self, since: dict[bytes, int]) -> Deferred[Replay]:
        return succeed({k: self.history.after(k, n) for k, n in since.items()})

    def last(self, roomKey: bytes, count: int, before: int | None) -> Deferred[Last]:
        return succeed(self.history.last(roomKey, min(count, self.limit), before))

    def __len__(self) -> int:
        return len(self.tokens)
