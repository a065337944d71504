"""Resume across a crash with ``--history-db`` (chatd.server.resumejournal),
in memory: a server that is not stopped (a crash) and a new one on the
same file; task.Clock for the writes and the windows, sqlite in a temp
dir."""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from chatd.core.tokens import digest
from chatd.server.historydb import SCHEMA_VERSION, HistoryDB
from chatd.server.historystore import CRASH_GAP, FLUSH_DELAY
from chatd.wire import ErrorCode, LeaveReason
from chatd.wire import FrameType as T
from tests.memory import Peer, Server

WINDOW = 60.0


def marks(frames: list[tuple[int, bytes]]) -> list[int]:
    return [int(p.rsplit(b".", 1)[1]) for t, p in frames if t == T.MARK]


class RestartTests(SynchronousTestCase):
    """What a crash keeps, what a window or a graceful stop ends."""

    def setUp(self) -> None:
        self.path = self.mktemp()

    def server(self, window: float = WINDOW) -> Server:
        server = Server(history_db=self.path, resume_window=window, idle_timeout=0.0)
        self.addCleanup(server.factory.closeHistory)
        return server

    def crash(self, server: Server) -> None:
        """Everything written (the 0.1 s passed), then nothing more: the
        process is gone without a word."""
        server.clock.advance(FLUSH_DELAY)
        store = server.factory.historyStore
        assert store is not None
        store.db.close()
        store._closed = True  # the cleanup's close must write nothing

    def speaker(self, server: Server, name: bytes) -> tuple[Peer, bytes]:
        """A resumable ACTIVE user and its token."""
        peer = server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUMABLE)
        peer.send(T.HELLO, name)
        token = next((p for t, p in peer.received() if t == T.TOKEN), b"")
        peer.send(T.READY)
        peer.received()
        return peer, token

    def member(self, server: Server, name: bytes) -> Peer:
        """An ACTIVE 1.2 user (rooms), not numbered, its output read."""
        peer = server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.HELLO, name)
        peer.send(T.READY)
        peer.received()
        return peer

    def resume(self, server: Server, token: bytes, since: bytes) -> list:
        peer = server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, token)
        peer.send(T.SINCE, since)
        peer.send(T.READY)
        self.peer = peer
        frames = peer.received()
        self.assertEqual(frames[0], (T.VERSION, b"1.2"))
        return frames[1:]

    def test_a_crash_keeps_the_session_for_a_resume(self) -> None:
        first = self.server()
        alice, token = self.speaker(first, b"alice")
        bob, _ = self.speaker(first, b"bob")
        alice.send(T.ENTER, b"den")
        alice.received()
        bob.send(T.SAY, b"one")
        seen = marks(alice.received())
        bob.send(T.SAY, b"two")  # alice never got it: the crash came first
        self.crash(first)
        with open(self.path, "rb") as f:
            self.assertNotIn(token, f.read())  # only its digest is kept
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        rows = conn.execute(
            "SELECT uid, name, digest, rooms FROM resumables"
        ).fetchall()
        self.assertEqual(
            sorted((n, d, r) for _, n, d, r in rows),
            [(b"alice", digest(token), b"den"), (b"bob", rows[1][2], b"")],
        )
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], 2)

        second = self.server()
        carol = second.active(b"carol")
        carol.received()
        carol.send(T.WHO)
        who = [
            e.split(b".")[2]
            for t, p in carol.received()
            if t == T.USERS
            for e in p.split(b"\n")
            if e
        ]
        self.assertEqual(who, [b"alice", b"bob", b"carol"])  # names held
        taken = second.connect()
        taken.send(T.HELLO, b"Alice")
        self.assertEqual(taken.received()[0][1].split(b".")[0], b"NAME_TAKEN")

        got = self.resume(second, token, b"lobby.%d" % seen[-1])
        types = [t for t, _ in got]
        self.assertEqual(types[:2], [T.WELCOME, T.TOKEN])
        said = [p for t, p in got if t == T.MESSAGE]
        self.assertEqual(len(said), 1, got)  # what it missed: "two", once
        self.assertTrue(said[0].endswith(b".two"), got)
        self.assertTrue([p for t, p in got if t == T.JOIN][0].endswith(b".carol"))
        self.assertNotIn(T.JOIN, types[: types.index(T.MARK)])
        self.assertEqual(marks(got), sorted(set(marks(got))))  # in order, once
        # Numbers never repeat: the new ones are past the crash's gap.
        self.assertGreater(marks(got)[-1] >> 16, CRASH_GAP)
        self.assertEqual(carol.received(), [])  # no LEAVE, no JOIN for alice
        # alice is back in her room, live.
        self.peer.send(T.ROOM_SAY, b"den.back")
        self.assertIn(T.ROOM_MESSAGE, self.peer.types())

    def test_a_window_that_ends_after_the_restart_is_one_leave(self) -> None:
        first = self.server()
        alice, token = self.speaker(first, b"alice")
        alice.send(T.ENTER, b"den")
        alice.received()
        self.crash(first)

        second = self.server()
        report = second.factory.hub.resumeReport()
        self.assertEqual((report["detached"], report["tokens"]), (1, 1))  # type: ignore[index]
        carol = self.member(second, b"carol")
        carol.send(T.ENTER, b"den")
        carol.send(T.ROOM_WHO, b"den")
        who = b"".join(p for t, p in carol.received() if t == T.USERS)
        self.assertIn(b".alice", who)  # alice is still in her room
        second.clock.advance(WINDOW - 1)
        self.assertEqual(carol.received(), [])  # the full window from the start
        second.clock.advance(1)
        got = carol.received()
        self.assertEqual([t for t, _ in got], [T.LEAVE, T.ROOM_LEAVE])
        self.assertTrue(got[0][1].endswith(b".alice.error"), got)
        second.clock.advance(WINDOW)
        self.assertEqual(carol.received(), [])  # once
        got = self.resume(second, token, b"lobby.1")
        self.assertTrue(got[0][1].startswith(b"BAD_TOKEN."), got)
        second.clock.advance(FLUSH_DELAY)
        self.assertEqual(HistoryDB(self.path).load().resumables, [])

    def test_a_crash_again_keeps_them_again(self) -> None:
        first = self.server()
        _, token = self.speaker(first, b"alice")
        self.crash(first)
        self.crash(self.server())
        third = self.server()
        got = self.resume(third, token, b"lobby.1")
        self.assertEqual([t for t, _ in got[:2]], [T.WELCOME, T.TOKEN])

    def test_a_resumed_token_is_spent_in_the_file_too(self) -> None:
        first = self.server()
        _, token = self.speaker(first, b"alice")
        self.crash(first)
        second = self.server()
        got = self.resume(second, token, b"lobby.1")
        fresh = got[1][1]
        self.crash(second)
        third = self.server()
        self.assertEqual(self.resume(third, token, b"lobby.1")[0][0], T.ERROR)
        got = self.resume(third, fresh, b"lobby.1")
        self.assertEqual([t for t, _ in got[:2]], [T.WELCOME, T.TOKEN])

    def test_a_graceful_stop_leaves_nothing_resumable(self) -> None:
        first = self.server()
        alice, token = self.speaker(first, b"alice")
        alice.lose()  # detached when the stop comes
        _, other = self.speaker(first, b"bob")
        first.factory.closeAll(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
        first.factory.closeHistory()
        stored = HistoryDB(self.path).load()
        self.assertEqual((stored.resumables, stored.clean), ([], True))
        second = self.server()
        for kept in (token, other):
            got = self.resume(second, kept, b"lobby.1")
            self.assertTrue(got[0][1].startswith(b"BAD_TOKEN."), got)
        # A clean stop: numbers go on right after the last one.
        self.assertEqual(second.factory.historyStore.lastSeq, stored.lastSeq)  # type: ignore[union-attr]

    def test_no_window_after_the_restart_they_leave_at_once(self) -> None:
        first = self.server()
        self.speaker(first, b"alice")
        self.crash(first)
        second = self.server(window=0.0)
        carol, _ = self.speaker(second, b"carol")
        carol.send(T.HISTORY, b"lobby.5")
        frames = [p for t, p in carol.received() if t == T.LEAVE]
        self.assertEqual(len(frames), 1)
        self.assertTrue(frames[0].endswith(b".alice.error"))
        carol.send(T.WHO)
        who = [p for t, p in carol.received() if t == T.USERS and p]
        self.assertEqual(len(who), 1)

    def test_a_kick_ends_a_restored_user(self) -> None:
        first = self.server()
        self.speaker(first, b"alice")
        self.crash(first)
        second = self.server()
        carol = second.active(b"carol")
        carol.received()
        self.assertTrue(second.factory.kick("alice"))
        got = carol.received()
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0][1].endswith(b".alice.kicked"), got)
        self.assertEqual(second.factory.hub.resumeReport()["detached"], 0)  # type: ignore[index]

    def test_the_file_of_schema_one_is_upgraded(self) -> None:
        conn = sqlite3.connect(self.path)
        conn.execute(
            "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 0),"
            " last_seq INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO state VALUES (0, 7)")
        conn.execute("CREATE TABLE events (room BLOB, seq INTEGER, event BLOB)")
        conn.execute("CREATE TABLE rooms (room BLOB, gone INTEGER)")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
        stored = HistoryDB(self.path).load()
        self.assertEqual(
            (stored.lastSeq, stored.clean, stored.resumables), (7, True, [])
        )
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        self.assertEqual(version, SCHEMA_VERSION)
