"""``--history-db``: the file (chatd.server.historydb), the store written
behind (chatd.server.historystore, with a task.Clock for the flush), and
the history of a server read back after a restart (in memory)."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatd.core.events import Message, Messages
from chatd.core.history import number
from chatd.core.roster import User
from chatd.server.config import build
from chatd.server.historydb import (
    SCHEMA_VERSION,
    Batch,
    HistoryDB,
    HistoryDBError,
    checkHistoryDB,
)
from chatd.server.historystore import CRASH_GAP, FLUSH_DELAY, PersistentHistory
from chatd.wire import FrameType as T
from chatd.wire import encode
from chatd.wire.eventcodec import encodeEvent
from tests.memory import Server

ALICE = User(1, 31, b"alice")


def said(seq: int, text: bytes = b"hi") -> Message:
    event = Message(ALICE, text)
    event.seq = seq
    return event


def row(room: bytes, seq: int) -> tuple[bytes, int, bytes]:
    return room, seq, encodeEvent(said(seq))


class FileTests(SynchronousTestCase):
    """The SQLite file: schema, a batch per transaction, what start reads."""

    def test_a_batch_and_what_is_read_back(self) -> None:
        db = HistoryDB(":memory:")
        db.write(Batch([row(b"a", s) for s in (1, 2, 3)] + [row(b"b", 4)]))
        db.write(Batch([row(b"a", 5)], gone={b"a": 2}))
        stored = db.load()
        self.assertEqual(stored.lastSeq, 5)
        self.assertEqual(
            stored.events,
            [(b"a", encodeEvent(said(s))) for s in (3, 5)]
            + [(b"b", encodeEvent(said(4)))],
        )
        self.assertEqual(stored.gone, {b"a": 2})
        db.write(Batch(evicted=[b"a"]))
        stored = db.load()
        self.assertEqual([r for r, _ in stored.events], [b"b"])
        self.assertEqual((stored.gone, stored.lastSeq), ({}, 5))

    def test_versioned_schema_in_wal_mode(self) -> None:
        path = self.mktemp()
        checkHistoryDB(path)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION
        )
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def refused(self, path: str) -> str:
        with self.assertRaises(HistoryDBError) as caught:
            checkHistoryDB(path)
        text = str(caught.exception)
        self.assertIn(path, text)
        self.assertNotIn("\n", text)
        return text

    def test_a_newer_schema_is_refused(self) -> None:
        path = self.mktemp()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        self.assertIn("newer than this chatd's", self.refused(path))

    def test_a_corrupt_file_is_refused(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a database " * 100)
        self.assertIn("not a database", self.refused(path))

    def test_another_sqlite_file_is_refused(self) -> None:
        path = self.mktemp()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE mine (x)")
        conn.close()
        self.assertIn("not a chatd history", self.refused(path))

    def test_a_path_that_cannot_be_a_file_is_refused(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        self.assertIn("unable to open", self.refused(path))


class ConfigTests(SynchronousTestCase):
    def test_a_missing_directory_is_one_line(self) -> None:
        path = os.path.join(self.mktemp(), "h.db")
        with self.assertRaises(usage.UsageError) as caught:
            build({"history-db": path}, {})
        self.assertIn("--history-db: directory", str(caught.exception))

    def test_a_bad_file_names_the_option(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        with self.assertRaises(usage.UsageError) as caught:
            build({"history-db": path}, {})
        self.assertTrue(str(caught.exception).startswith("--history-db: "))

    def test_one_process_only(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            build({"history-db": self.mktemp(), "workers": "2"}, {})
        self.assertIn("one process only", str(caught.exception))

    def test_off_by_default(self) -> None:
        self.assertIsNone(build({}, {}).history_db)


class StoreTests(SynchronousTestCase):
    """Memory answers; the file is written in one transaction per flush."""

    def store(
        self, path: str, limit: int = 100, keepEnded: int = 10
    ) -> PersistentHistory:
        self.clock = Clock()
        store = PersistentHistory(
            HistoryDB(path), self.clock, limit, keepEnded=keepEnded
        )
        store.load()
        self.addCleanup(store.db.close)
        return store

    def test_written_behind_in_one_transaction(self) -> None:
        path = self.mktemp()
        store = self.store(path)
        for seq in range(1, 6):
            store.record(b"lobby", said(seq))
        self.assertEqual(len(store), 5)  # answered from memory at once
        self.assertEqual((store.written, len(self.clock.getDelayedCalls())), (0, 1))
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual((store.written, store.transactions), (5, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        again = self.store(path)  # the first was not closed: as after a crash
        self.assertEqual(again.lastSeq, 5 + CRASH_GAP)
        held = again.last(b"lobby", 10)
        self.assertEqual(
            [(e.seq, e.text) for e, _, _ in held], [(s, b"hi") for s in range(1, 6)]
        )

    def test_close_writes_what_is_left(self) -> None:
        path = self.mktemp()
        store = self.store(path)
        store.record(b"lobby", said(7))
        store.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.store(path).lastSeq, 7)

    def test_a_run_of_says_comes_back_whole(self) -> None:
        path = self.mktemp()
        store = self.store(path)
        run = Messages(
            b"".join(encode(T.MESSAGE, b"1.31.alice.m%d" % i) for i in range(3)), 3
        )
        run.seq = 9
        store.record(b"lobby", run)
        store.close()
        again = self.store(path)
        self.assertEqual(again.lastUserId, 1)  # read from the run's frames
        [(event, first, stop)] = again.last(b"lobby", 10)
        self.assertIsInstance(event, Messages)
        self.assertEqual((event.seq, event.frame, first, stop), (9, run.frame, 0, 3))

    def test_the_file_has_the_bounds_of_memory(self) -> None:
        path = self.mktemp()
        store = self.store(path, limit=3)
        for seq in range(1, 9):
            store.record(b"lobby", said(seq))
        store.close()
        again = self.store(path, limit=3)
        self.assertEqual([e.seq for e, _, _ in again.last(b"lobby", 10)], [6, 7, 8])
        # What was dropped is still known to be gone (HISTORY_GONE).
        gone, held = again.after(b"lobby", number(2))
        self.assertEqual((gone, [e.seq for e, _ in held]), (number(6), [6, 7, 8]))
        rows = sqlite3.connect(path).execute("SELECT count(*) FROM events")
        self.assertEqual(rows.fetchone()[0], 3)
        again.close()
        smaller = self.store(path, limit=2)  # restarted with --history 2
        smaller.close()
        rows = sqlite3.connect(path).execute("SELECT seq FROM events")
        self.assertEqual(rows.fetchall(), [(7,), (8,)])

    def test_an_ended_room_keeps_its_history_within_the_cap(self) -> None:
        path = self.mktemp()
        store = self.store(path, keepEnded=1)
        store.record(b"a", said(1))
        store.record(b"b", said(2))
        store.drop(b"a")
        self.assertEqual(store.rooms, 2)  # kept: it may come back
        store.drop(b"b")  # one ended room too many: the first ended goes
        self.assertEqual(store.rooms, 1)
        self.assertEqual(store.last(b"a", 5), [])
        store.close()
        again = self.store(path, keepEnded=1)
        self.assertEqual([e.seq for e, _, _ in again.last(b"b", 5)], [2])
        self.assertEqual(again.last(b"a", 5), [])

    def test_a_failed_write_is_logged_and_counted(self) -> None:
        store = self.store(self.mktemp())
        store.db.path = os.path.join(self.mktemp(), "gone", "h.db")
        store.record(b"lobby", said(1))
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual((store.written, store.lost), (0, 1))
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class RestartTests(SynchronousTestCase):
    """A server's history, read back by the next server on the same file."""

    def server(self, path: str) -> Server:
        server = Server(
            history_db=path, resume_window=60.0, idle_timeout=0.0, rooms=(("ops", ""),)
        )
        self.addCleanup(server.factory.closeHistory)
        return server

    def numbered(self, server: Server, name: bytes):  # type: ignore[no-untyped-def]
        peer = server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUMABLE)
        peer.send(T.HELLO, name)
        peer.send(T.READY)
        peer.received()
        return peer

    def history(self, peer, room: bytes) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
        peer.send(T.HISTORY, room + b".50")
        frames = peer.received()
        self.assertEqual(frames[0][0], T.HISTORY)
        return [
            (int(mark.rsplit(b".", 1)[1]), frame)
            for (_, mark), (_, frame) in zip(frames[1::2], frames[2::2], strict=True)
        ]

    def test_history_and_numbers_outlive_a_restart(self) -> None:
        path = self.mktemp()
        first = self.server(path)
        # A resume replays from the same store HISTORY answers from.
        self.assertIs(first.factory.hub.resumes.history, first.factory.historyStore)  # type: ignore[union-attr]
        alice = self.numbered(first, b"alice")
        alice.send(T.SAY, b"one")
        alice.send(T.ENTER, b"den")
        alice.send(T.ROOM_SAY, b"den.two")
        alice.send(T.ROOM_SAY, b"ops.three")
        alice.received()
        lobby = self.history(alice, b"lobby")
        den = self.history(alice, b"den")
        ops = self.history(alice, b"ops")
        alice.send(T.BYE)
        alice.received()
        first.factory.closeHistory()
        first.clock.advance(FLUSH_DELAY)

        second = self.server(path)
        bob = self.numbered(second, b"bob")
        # Ids go on after those the history names: alice was 1, bob is not.
        self.assertEqual(second.factory.historyStore.lastUserId, 1)  # type: ignore[union-attr]
        self.assertTrue(lobby[0][1].startswith(b"1."))
        bob.send(T.WHO)
        users = [p for t, p in bob.received() if t == T.USERS]
        self.assertEqual([u.split(b".")[0] for u in users if u], [b"2"])
        self.assertEqual(self.history(bob, b"ops")[: len(ops)], ops)
        again = self.history(bob, b"lobby")
        self.assertEqual(again[: len(lobby)], lobby)  # then alice's LEAVE, bob's JOIN
        self.assertIn(b"one", again[0][1] + again[1][1])
        bob.send(T.SAY, b"new")
        frames = bob.received()
        self.assertGreater(int(frames[0][1].rsplit(b".", 1)[1]), again[-1][0])
        # A room that ended comes back with what was said in it.
        bob.send(T.ENTER, b"den")
        bob.received()
        self.assertEqual(self.history(bob, b"den")[: len(den)], den)
        report = second.factory.historyReport()
        self.assertEqual(report, {"path": path, "events_written": 0,
                                  "transactions": 0, "events_lost": 0})  # fmt: skip
        second.clock.advance(FLUSH_DELAY)
        self.assertEqual(second.factory.historyReport()["transactions"], 1)  # type: ignore[index]
