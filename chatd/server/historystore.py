"""``--history-db``: the rooms' history kept in memory and written behind.

:class:`PersistentHistory` is an :class:`~chatd.core.history.IHistoryStore`
that answers from an in-memory :class:`~chatd.core.history.History`
(HISTORY and a resume never touch the disk) and writes what it recorded to
a :class:`~chatd.server.historydb.HistoryDB` later: sqlite3 blocks, so
nothing is written in the delivery path.  The events of a short interval
(:data:`FLUSH_DELAY`) are written together in one transaction, and
:meth:`PersistentHistory.close` writes what is left (a graceful stop).
The file has the same bounds as memory (``--history``, ``--history-bytes``
per room): what memory drops, the same transaction deletes.

A room that ends keeps its history (unlike memory alone): entered again,
now or after a restart, it shows what was said before.  So that the file
stays bounded, at most ``--max-rooms`` ended rooms keep theirs, the one
that ended first going first; with at most ``--max-rooms`` rooms alive,
the file holds at most twice ``--max-rooms`` rooms' histories.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import implementer

from chatd.core.events import Messages
from chatd.core.history import History, IHistoryStore
from chatd.core.roomevents import RoomJoin, RoomLeave
from chatd.core.rooms import key
from chatd.server.historydb import Batch, HistoryDB, HistoryDBError, Resumable
from chatd.wire import HEADER_SIZE
from chatd.wire.eventcodec import BadEvent, decodeEvent, encodeEvent

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from chatd.core.events import Event
    from chatd.server.config import Config
    from chatd.server.resumejournal import ResumeJournal

log = Logger(namespace="chatd")

#: Seconds between a recorded event and the transaction that writes it.
FLUSH_DELAY = 0.1

#: After a crash the sequence goes on this far past the last seq written:
#: the events of the last FLUSH_DELAY were numbered but not written, and a
#: client may have seen their numbers, so none may be given again.
CRASH_GAP = 1 << 20


@implementer(IHistoryStore)
class PersistentHistory:
    """Memory answers; the file is written behind (module doc)."""

    def __init__(
        self,
        db: HistoryDB,
        clock: IReactorTime,
        limit: int = 100,
        maxBytes: int = 65536,
        keepEnded: int = 1000,
        delay: float = FLUSH_DELAY,
    ) -> None:
        self.db = db
        self.memory = History(limit, maxBytes)
        self.clock = clock
        self.keepEnded = keepEnded
        self.delay = delay
        #: The last seq the file holds (the sequencer starts after it).
        self.lastSeq = 0
        #: The highest user id its events name (new users' ids are higher,
        #: so no old line shares an id with a new user).
        self.lastUserId = 0
        #: Ended rooms that keep their history, the first ended first.
        self._ended: dict[bytes, None] = {}
        self._pending: list[tuple[bytes, Event]] = []
        #: Rooms whose bound to write may have moved (events dropped).
        self._trimmed: set[bytes] = set()
        self._evicted: dict[bytes, None] = {}
        self._flush: IDelayedCall | None = None
        self._closed = False
        #: The resumable users read back (chatd.server.resumejournal).
        self.resumables: list[Resumable] = []
        #: Writes the resumable users with the events; None: not written.
        self.journal: ResumeJournal | None = None
        #: Events written, transactions, and events a failed write lost.
        self.written = self.transactions = self.lost = 0

    # -- start ------------------------------------------------------------

    def load(self, live: Iterable[bytes] = ()) -> None:
        """Read the file into memory (then close it: see historydb's doc).
        Every room read is counted as ended except ``live`` (the default
        room and the operator's, which never end)."""
        stored = self.db.load()
        self.db.begin()
        self.db.close()
        self.lastSeq = stored.lastSeq
        self.resumables = stored.resumables
        if not stored.clean:
            self.lastSeq += CRASH_GAP
        newest: dict[bytes, int] = {}
        try:
            for roomKey, data in stored.events:
                event = decodeEvent(data)
                self.memory.record(roomKey, event)
                newest[roomKey] = event.seq
                self.lastUserId = max(self.lastUserId, _userIdOf(event))
        except BadEvent as e:
            raise HistoryDBError(f"{self.db.path}: a bad event: {e}") from None
        for roomKey, gone in stored.gone.items():
            self.memory.forgot(roomKey, gone)
        # Smaller bounds than the file was written with: trim it too.
        self._trimmed = {
            r for r in newest if self.memory.gone(r) > stored.gone.get(r, 0)
        }
        if self._trimmed:
            self.soon()
        alive = set(live)
        for roomKey in sorted(newest, key=newest.__getitem__):
            if roomKey not in alive:
                self._ended[roomKey] = None
        log.info(
            "history-db {path}: {events} events of {rooms} rooms, last seq {seq},"
            " last user id {uid}, {kept} resumable users{crash}",
            path=self.db.path,
            events=len(self.memory),
            rooms=self.memory.rooms,
            seq=self.lastSeq,
            uid=self.lastUserId,
            kept=len(self.resumables),
            crash="" if stored.clean else " (not stopped cleanly)",
        )

    # -- IHistoryStore ----------------------------------------------------

    @property
    def limit(self) -> int:
        return self.memory.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self.memory.limit = value

    @property
    def maxBytes(self) -> int:
        return self.memory.maxBytes

    @maxBytes.setter
    def maxBytes(self, value: int) -> None:
        self.memory.maxBytes = value

    @property
    def rooms(self) -> int:
        return self.memory.rooms

    @property
    def heldBytes(self) -> int:
        return self.memory.heldBytes

    def __len__(self) -> int:
        return len(self.memory)

    def record(self, roomKey: bytes, event: Event) -> None:
        if self.memory.limit <= 0:
            return
        self.memory.record(roomKey, event)
        self._ended.pop(roomKey, None)
        if not self._closed:
            self._pending.append((roomKey, event))
            self.soon()
            if self.journal is not None and type(event) in (RoomJoin, RoomLeave):
                self.journal.touched(event.user.id)  # type: ignore[attr-defined]

    def revive(self, roomKey: bytes) -> None:
        """The room lives again (a user read back is in it): it has not
        ended, its history is not to be evicted."""
        self._ended.pop(roomKey, None)

    def drop(self, roomKey: bytes) -> None:
        """The room ended: it keeps its history, within the cap."""
        self._ended[roomKey] = None
        while len(self._ended) > self.keepEnded:
            oldest = next(iter(self._ended))
            del self._ended[oldest]
            self.memory.drop(oldest)
            self._pending = [p for p in self._pending if p[0] != oldest]
            self._evicted[oldest] = None
            self.soon()

    def after(
        self, roomKey: bytes, since: int
    ) -> tuple[int | None, list[tuple[Event, int]]]:
        return self.memory.after(roomKey, since)

    def last(
        self, roomKey: bytes, count: int, before: int | None = None
    ) -> list[tuple[Event, int, int]]:
        return self.memory.last(roomKey, count, before)

    # -- writing ------------------------------------------------------------

    def soon(self) -> None:
        """Write what is pending in one transaction, shortly."""
        if self._flush is None and not self._closed:
            self._flush = self.clock.callLater(self.delay, self.flush)

    def batch(self) -> Batch:
        """What is not written yet, as one transaction (and forget it)."""
        pending, self._pending = self._pending, []
        evicted, self._evicted = list(self._evicted), {}
        rooms = {roomKey for roomKey, _ in pending} | self._trimmed
        self._trimmed = set()
        gone = {r: g for r in rooms if (g := self.memory.gone(r))}
        events = [(r, e.seq, encodeEvent(e)) for r, e in pending]
        kept = self.journal.changes() if self.journal is not None else {}
        return Batch(events, gone, evicted, kept, final=self._closed)

    def flush(self) -> None:
        """Write what was recorded since the last flush, in one transaction."""
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        batch = self.batch()
        if not batch:
            return
        try:
            self.db.write(batch)
        except (sqlite3.Error, HistoryDBError) as e:
            self.lost += len(batch.events)
            log.error(
                "history-db {path}: {n} events not written: {why}",
                path=self.db.path,
                n=len(batch.events),
                why=str(e),
            )
            return
        self.written += len(batch.events)
        self.transactions += 1

    def close(self) -> None:
        """Write what is left and close the file (a graceful stop); later
        events are kept in memory only.  Nobody is resumable after it
        (everyone left), and the file says the stop was clean."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self.db.close()
        log.info(
            "history-db {path}: closed; {n} events written in {t} transactions",
            path=self.db.path,
            n=self.written,
            t=self.transactions,
        )


def openStore(config: Config, clock: IReactorTime) -> PersistentHistory:
    """The store ``config.history_db`` names, read back; the default room
    and the operator's (``--room``) never end."""
    if config.history_db is None:
        raise ValueError("no --history-db given")
    store = PersistentHistory(
        HistoryDB(config.history_db),
        clock,
        config.history,
        config.history_bytes,
        keepEnded=config.max_rooms,
    )
    names = [config.default_room] + [name for name, _ in config.rooms]
    store.load(key(name.encode()) for name in names)
    return store


def _userIdOf(event: Event) -> int:
    """The id of the user an event is by (0: none).  A bulk run of SAYs
    (Messages) has no User, only its frames: ``id.color.name.text``."""
    user = getattr(event, "user", None)
    if user is not None:
        return int(user.id)
    if isinstance(event, Messages) and event.frame:
        head = event.frame[HEADER_SIZE : HEADER_SIZE + 12].split(b".", 1)[0]
        if head.isdigit():
            return int(head)
    return 0
