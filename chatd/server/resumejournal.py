"""``--history-db``'s resumable users: written down, so a crash ends no
session (docs/operations.md, "The history file").

:class:`ResumeJournal` is one process's
:class:`~chatd.core.resumes.IResumeJournal`: it knows which sessions may
be resumed (their token's SHA-256, never the token, and their window's
end) and hands the store's next transaction the rows that changed, so a
token is written with the events of the same 0.1 s.  A user's rooms are
read when its row is written: a ROOM_JOIN or ROOM_LEAVE of a resumable
user marks its row (:meth:`touched`, from the store).

:func:`restore`, at start: the users the file names were active or
detached when the process died, so no graceful stop ended them.  Each is
detached again for the full ``--resume-window`` from this start (the
crash gave none of them a chance to come back while the server was down):
its name held, in WHO and in its rooms, resumable by its token, with no
JOIN sequenced.  A window that ends sequences the LEAVE ``error`` once, as
any window does; with ``--resume-window 0`` they all leave at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import implementer

from chatd.core.connection import ACTIVE, IConnection
from chatd.core.events import Join, Leave
from chatd.core.resumes import IResumeJournal, LocalResumes
from chatd.core.roomevents import RoomTopic
from chatd.core.rooms import Directory, key
from chatd.core.roster import Roster, User
from chatd.core.rules import LeaveReason, valid_name
from chatd.core.session import Session
from chatd.server.historydb import Resumable

if TYPE_CHECKING:
    from chatd.core.codec import IClientCodec
    from chatd.core.hub import Hub
    from chatd.server.historystore import PersistentHistory

log = Logger(namespace="chatd")


@implementer(IResumeJournal)
class ResumeJournal:
    """The resumable sessions, and the rows of theirs not yet written."""

    def __init__(self, directory: Directory, soon: Callable[[], None]) -> None:
        """``soon``: schedule the store's next transaction."""
        self.directory = directory
        self.soon = soon
        #: uid -> (its resumable session, token digest, deadline seconds).
        self._kept: dict[int, tuple[Session, bytes, float]] = {}
        self._changed: dict[int, None] = {}

    def kept(self, session: Session, digest: bytes, deadline: float) -> None:
        user = session.user
        if user is not None:
            self._kept[user.id] = (session, digest, deadline)
            self.mark(user.id)

    def spent(self, session: Session) -> None:
        user = session.user
        held = self._kept.get(user.id) if user is not None else None
        if held is not None and held[0] is session:
            del self._kept[user.id]  # type: ignore[union-attr]
            self.mark(user.id)  # type: ignore[union-attr]

    def touched(self, uid: int) -> None:
        """User ``uid`` entered or left a room: rewrite its row, if kept."""
        if uid in self._kept:
            self.mark(uid)

    def mark(self, uid: int) -> None:
        """Write ``uid``'s row again (deleted, if it is not kept)."""
        self._changed[uid] = None
        self.soon()

    def changes(self) -> dict[int, Resumable | None]:
        """The rows to write now (None: delete), and forget them."""
        changed, self._changed = self._changed, {}
        default = self.directory.default
        rows: dict[int, Resumable | None] = {}
        for uid in changed:
            held = self._kept.get(uid)
            user = held[0].user if held is not None else None
            if held is None or user is None:
                rows[uid] = None
                continue
            rooms = tuple(
                r.name for r in self.directory.roomsOf(uid) if r is not default
            )
            deadline = int(held[2] * 1000)
            rows[uid] = Resumable(uid, user.color, user.name, held[1], rooms, deadline)
        return rows

    def __len__(self) -> int:
        return len(self._kept)


@implementer(IConnection)
class Unattached:
    """The connection of a session read back after a crash: none yet
    (an :class:`~chatd.core.connection.IConnection` that drops output)."""

    number = 0
    peer = "(restart)"
    host = ""

    def __init__(self, codec: IClientCodec) -> None:
        self.codec = codec

    def write(self, data: bytes) -> None:
        """Nobody to write to: a detached session writes nothing anyway."""

    def backlog(self) -> int:
        return 0

    def hangUp(self) -> None:
        """Nothing to close."""

    def holdInput(self, hold: bool) -> None:
        """No input comes."""

    def dropUnstarted(self) -> None:
        """Nothing was written."""


def restore(hub: Hub, store: PersistentHistory, codec: IClientCodec) -> int:
    """Journal ``hub``'s resumable users into ``store`` from now on, and
    detach again the users ``store`` read back (module doc); how many."""
    resumes = hub.resumes
    assert isinstance(resumes, LocalResumes)
    journal = ResumeJournal(hub.rooms.directory, store.soon)
    store.journal = resumes.journal = journal
    rows, store.resumables = store.resumables, []
    window = hub.config.resume_window
    users = [(user, row) for row in rows if (user := _rejoin(hub, store, row, journal))]
    for user, row in users:
        if window <= 0:
            hub.roster.release(user)
            hub.sequencer.submit(Leave(user, LeaveReason.ERROR))
            journal.mark(user.id)
            continue
        session = Session(hub, Unattached(codec))
        session.user = user
        session.state = ACTIVE
        session.numbered = True
        session._disconnected = True
        session.fanout.target(session)  # an operator's kick ends it
        hub.detached[session] = None
        resumes.tokens.restore(session, row.digest)
        session._window = resumes.keep(session, window)
        log.info(
            "detach id={id} name={name} why=restart window={window}",
            id=user.id,
            name=user.display,
            window=window,
        )
    return len(users)


def _rejoin(
    hub: Hub, store: PersistentHistory, row: Resumable, journal: ResumeJournal
) -> User | None:
    """``row``'s user is back as it was: its name held, in WHO and in its
    rooms, no event sequenced; None (its row deleted) if it cannot be."""
    roster = hub.roster
    user = User(row.uid, row.color, row.name)
    if not (valid_name(row.name) and isinstance(roster, Roster) and roster.hold(user)):
        journal.mark(row.uid)
        return None
    hub.replica.deliver(Join(user))  # WHO lists it; nobody is told
    rooms = hub.rooms
    for name in row.rooms:
        if not valid_name(name):
            continue
        revived = rooms.directory.get(name) is None
        room = rooms.directory.add(user.id, name)
        rooms.users[user.id] = user
        store.revive(key(name))
        if revived and not room.permanent:
            room.topic = _lastTopic(store, key(name))
    return user


def _lastTopic(store: PersistentHistory, roomKey: bytes) -> bytes:
    """A room that lives on after a crash keeps the topic its history says."""
    for event, _, _ in reversed(store.last(roomKey, store.limit)):
        if type(event) is RoomTopic:
            return bytes(event.topic)
    return b""
