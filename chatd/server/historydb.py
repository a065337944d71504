"""The file behind ``--history-db``: each room's history in SQLite.

Only I/O, no policy: :class:`HistoryDB` opens (and on first use creates)
the file, checks it is a chatd history of a schema this chatd knows, reads
it all back at start and writes one batch per transaction.  What to write
and when is :mod:`chatd.server.historystore`'s.

Since schema 2 it also holds the resumable users (table ``resumables``:
a token's SHA-256 digest, never the token, with the user and its rooms),
so that a crash does not end their sessions (chatd.server.resumejournal),
and whether the last stop was clean (``state.clean``).

An event is stored as the bytes :func:`chatd.wire.eventcodec.encodeEvent`
makes for the links between processes (its kind, seq, frame count and
chatd frame), so every front end spells it again on replay as it would a
live one.  The connection is opened when first needed and closed by
:meth:`HistoryDB.close`: the daemon reads the file before twistd forks and
writes only after, so no SQLite connection (nor its locks) crosses a fork.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

#: The schema this chatd writes (PRAGMA user_version); a newer one is refused.
SCHEMA_VERSION = 2

#: Schema 2's additions (a file of schema 1 gets them at open).
_RESUMABLES = (
    # One row per resumable user: its live token's SHA-256, its rooms
    # (names, space-separated) and its window's end (wall clock ms; 0
    # while attached).
    "CREATE TABLE resumables (uid INTEGER PRIMARY KEY, color INTEGER NOT NULL,"
    " name BLOB NOT NULL, digest BLOB NOT NULL, rooms BLOB NOT NULL,"
    " deadline INTEGER NOT NULL)",
    # 1 after a graceful stop, 0 from the first write on: a crash leaves 0.
    "ALTER TABLE state ADD COLUMN clean INTEGER NOT NULL DEFAULT 1",
)

_SCHEMA = (
    # One row per kept event; (room, seq) is unique: a room has one event
    # per place in the order (a LEAVE's ROOM_LEAVEs are in other rooms).
    "CREATE TABLE events (room BLOB NOT NULL, seq INTEGER NOT NULL,"
    " event BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID",
    # The seq of each room's newest dropped event: HISTORY_GONE's bound.
    "CREATE TABLE rooms (room BLOB PRIMARY KEY, gone INTEGER NOT NULL) WITHOUT ROWID",
    # The last seq written: the sequencer goes on after it.
    "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " last_seq INTEGER NOT NULL)",
    "INSERT INTO state (id, last_seq) VALUES (0, 0)",
    *_RESUMABLES,
)


class HistoryDBError(Exception):
    """The file cannot serve as the history: one line saying why."""


@dataclass(frozen=True)
class Resumable:
    """A resumable user as the file keeps it (no token: its digest)."""

    uid: int
    color: int
    name: bytes
    digest: bytes
    #: The 1.2 rooms it is in, besides the default room, in entry order.
    rooms: tuple[bytes, ...]
    #: When its window ends, wall clock ms; 0: it was attached.
    deadline: int

    def row(self) -> tuple[int, int, bytes, bytes, bytes, int]:
        return (self.uid, self.color, self.name, self.digest,
                b" ".join(self.rooms), self.deadline)  # fmt: skip


@dataclass
class Stored:
    """What the file holds, read back at start."""

    #: The last seq ever written (0: none).
    lastSeq: int = 0
    #: (room key, encoded event), each room's oldest first.
    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: room key -> the seq of its newest dropped event.
    gone: dict[bytes, int] = field(default_factory=dict)
    #: The resumable users at the last write.
    resumables: list[Resumable] = field(default_factory=list)
    #: Whether the last stop was graceful (False: a crash).
    clean: bool = True


@dataclass
class Batch:
    """One transaction's worth of changes."""

    #: (room key, seq, encoded event) to add.
    events: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    #: room key -> drop its events up to this seq (the bounds).
    gone: dict[bytes, int] = field(default_factory=dict)
    #: Rooms whose history goes altogether (ended rooms past the cap).
    evicted: list[bytes] = field(default_factory=list)
    #: uid -> its row to write, or None to delete it.
    resumables: dict[int, Resumable | None] = field(default_factory=dict)
    #: A graceful stop: no user is resumable any more, the stop was clean.
    final: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.events or self.gone or self.evicted or self.resumables or self.final
        )


class HistoryDB:
    """One SQLite file of room histories (module doc)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> sqlite3.Connection:
        """The connection, opened (and the file checked, or created) now
        if it is not yet; :class:`HistoryDBError` if the file will not do."""
        if self._conn is not None:
            return self._conn
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise self._error(e) from None
        try:
            self._prepare(conn)
        except sqlite3.Error as e:
            conn.close()
            raise self._error(e) from None
        except HistoryDBError:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _error(self, e: sqlite3.Error) -> HistoryDBError:
        return HistoryDBError(f"{self.path}: {e}")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryDBError(
                f"{self.path} has schema version {version}, newer than this "
                f"chatd's {SCHEMA_VERSION}: upgrade chatd or give another file"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # A write at once: a file chatd cannot write is refused at start.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if tables[0]:
                    raise HistoryDBError(
                        f"{self.path} is an SQLite file but not a chatd history"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
            elif version == 1:
                for statement in _RESUMABLES:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def load(self) -> Stored:
        """Everything the file holds."""
        conn = self.open()
        try:
            last, clean = conn.execute("SELECT last_seq, clean FROM state").fetchone()
            events = conn.execute(
                "SELECT room, event FROM events ORDER BY room, seq"
            ).fetchall()
            gone = dict(conn.execute("SELECT room, gone FROM rooms").fetchall())
            rows = conn.execute(
                "SELECT uid, color, name, digest, rooms, deadline FROM resumables"
                " ORDER BY uid"
            ).fetchall()
            resumables = [
                Resumable(
                    int(u), int(c), bytes(n), bytes(d), tuple(bytes(r).split()), int(t)
                )
                for u, c, n, d, r, t in rows
            ]
        except (sqlite3.Error, TypeError, ValueError) as e:  # TypeError: no state row
            raise HistoryDBError(f"{self.path}: not a chatd history: {e}") from None
        events = [(bytes(r), bytes(e)) for r, e in events]
        return Stored(last, events, gone, resumables, bool(clean))

    def write(self, batch: Batch) -> None:
        """``batch`` in one transaction (sqlite3.Error if it fails)."""
        conn = self.open()
        conn.execute("BEGIN")
        try:
            for room in batch.evicted:
                conn.execute("DELETE FROM events WHERE room = ?", (room,))
                conn.execute("DELETE FROM rooms WHERE room = ?", (room,))
            conn.executemany(
                "INSERT OR REPLACE INTO events VALUES (?, ?, ?)", batch.events
            )
            self._trim(conn, batch.gone.items())
            last = max((seq for _, seq, _ in batch.events), default=0)
            conn.execute(
                "UPDATE state SET last_seq = max(last_seq, ?), clean = ?",
                (last, int(batch.final)),
            )
            self._resumables(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def begin(self) -> None:
        """chatd runs on this file: until its graceful stop's last write,
        the stop is not clean (a crash leaves it so)."""
        conn = self.open()
        conn.execute("UPDATE state SET clean = 0")

    @staticmethod
    def _resumables(conn: sqlite3.Connection, batch: Batch) -> None:
        if batch.final:
            conn.execute("DELETE FROM resumables")
            return
        for uid, kept in batch.resumables.items():
            if kept is None:
                conn.execute("DELETE FROM resumables WHERE uid = ?", (uid,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO resumables VALUES (?, ?, ?, ?, ?, ?)",
                    kept.row(),
                )

    @staticmethod
    def _trim(conn: sqlite3.Connection, gone: Iterable[tuple[bytes, int]]) -> None:
        for room, seq in gone:
            conn.execute("DELETE FROM events WHERE room = ? AND seq <= ?", (room, seq))
            conn.execute("INSERT OR REPLACE INTO rooms VALUES (?, ?)", (room, seq))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def checkHistoryDB(path: str) -> None:
    """Open ``path`` as a history (creating it) and close it again, or
    :class:`HistoryDBError`: the check at start, before anything listens."""
    db = HistoryDB(path)
    try:
        db.load()
    finally:
        db.close()
