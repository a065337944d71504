"""End to end, a real twistd with ``--history-db``: stopped (SIGTERM) and
started again on the same file, HISTORY answers what was said before, with
the same numbers, and new events get larger ones; a file that will not do
is one line at start."""

from __future__ import annotations

import os
import signal

from twisted.internet import defer
from twisted.trial import unittest

from chatd.server.config import HELP_HINT
from chatd.wire import FrameType as T
from tests.daemon import TWISTD, Daemon, FrameClient, connect, run


@defer.inlineCallbacks
def history(client: FrameClient, room: bytes):  # type: ignore[no-untyped-def]
    """HISTORY ``room.100``: [(number, frame type, payload)], oldest first."""
    client.send(T.HISTORY, room + b".100")
    while True:
        ftype, payload = yield client.next()
        if ftype == T.HISTORY:
            break
    held = []
    for _ in range(int(payload.rsplit(b".", 1)[1])):
        mark = yield client.next()
        frame = yield client.next()
        held.append((int(mark[1].rsplit(b".", 1)[1]), *frame))
    return held


class HistoryDBEndToEnd(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.db = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def daemon(self):  # type: ignore[no-untyped-def]
        daemon = Daemon("--history-db", self.db, "--idle-timeout", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def user(self, daemon: Daemon, name: bytes):  # type: ignore[no-untyped-def]
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        client.send(T.VERSION, b"1.2")
        client.send(T.HELLO, name)
        client.send(T.READY)
        while (yield client.next())[0] != T.JOIN:
            pass
        return client

    @defer.inlineCallbacks
    def test_history_outlives_a_restart(self):  # type: ignore[no-untyped-def]
        first = yield self.daemon()
        alice = yield self.user(first, b"alice")
        alice.send(T.SAY, b"before")
        alice.send(T.ENTER, b"den")
        alice.send(T.ROOM_SAY, b"den.below")
        lobby = yield history(alice, b"lobby")
        den = yield history(alice, b"den")
        self.assertEqual(lobby[-1][1:], (T.MESSAGE, lobby[-1][2]))
        self.assertTrue(lobby[-1][2].endswith(b".before"), lobby)
        self.assertTrue(den[-1][2].endswith(b".below"), den)
        status = yield first.signal(signal.SIGTERM)
        self.assertEqual(status, 128 + signal.SIGTERM, first.log)
        self.assertIn("closed; 6 events written", first.log)

        second = yield self.daemon()
        bob = yield self.user(second, b"bob")
        again = yield history(bob, b"lobby")
        self.assertEqual(again[: len(lobby)], lobby)  # the same numbers
        self.assertEqual(again[len(lobby)][1], T.LEAVE)  # alice's, at shutdown
        bob.send(T.SAY, b"after")
        now = yield history(bob, b"lobby")
        self.assertTrue(now[-1][2].endswith(b".after"), now)
        self.assertGreater(now[-1][0], max(n for n, _, _ in again))
        bob.send(T.ENTER, b"den")  # the room comes back, its history too
        back = yield history(bob, b"den")
        self.assertEqual(back[: len(den)], den)

    @defer.inlineCallbacks
    def refused(self, path: str):  # type: ignore[no-untyped-def]
        """``twistd -n chatd --history-db path``: its exit status and output."""
        command = [*TWISTD[1:], "-n", "--pidfile=", "chatd", "--history-db", path]
        status, output = yield run([*command, "--listen", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(status, 1, output)
        line, hint = output.splitlines()  # as every config error: no traceback
        self.assertEqual(hint, HELP_HINT)
        self.assertTrue(line.startswith("chatd: --history-db: "), line)
        return line

    @defer.inlineCallbacks
    def test_a_bad_path_is_one_line(self):  # type: ignore[no-untyped-def]
        line = yield self.refused(os.path.join(self.db, "missing", "h.db"))
        self.assertIn("does not exist", line)

    @defer.inlineCallbacks
    def test_a_corrupt_file_is_one_line(self):  # type: ignore[no-untyped-def]
        with open(self.db, "wb") as f:
            f.write(b"garbage " * 1000)
        line = yield self.refused(self.db)
        self.assertIn("not a database", line)
