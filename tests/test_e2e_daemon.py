"""End to end: a real ``twistd -n chatd`` subprocess over real loopback sockets."""

from __future__ import annotations

import os
import signal

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import Daemon, activeUser, connect


class ChatTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon("--stats-interval", "0", "--shutdown-grace", "3")
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()

    def handshake(self, name):
        return activeUser(self, self.daemon.port, name.encode())

    @defer.inlineCallbacks
    def test_three_clients_chat(self):
        """Three users handshake; every MESSAGE reaches all in one order."""
        a, wa = yield self.handshake("alice")
        b, wb = yield self.handshake("bob")
        c, wc = yield self.handshake("carol")
        self.assertEqual((yield a.next()), (T.JOIN, wb))
        self.assertEqual((yield a.next()), (T.JOIN, wc))
        self.assertEqual((yield b.next()), (T.JOIN, wc))
        for client, text in ((a, b"hi"), (b, b"hello"), (c, b"hey")):
            client.send(T.SAY, text)
        seen = []
        for client in (a, b, c):
            frames = []
            for _ in range(3):
                frames.append((yield client.next()))
            seen.append(frames)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[1], seen[2])
        self.assertEqual(
            sorted(p.rsplit(b".", 1)[1] for _, p in seen[0]), [b"hello", b"hey", b"hi"]
        )
        self.assertTrue(all(t == T.MESSAGE for t, _ in seen[0]))

    @defer.inlineCallbacks
    def test_sigterm_sends_shutdown(self):
        """SIGTERM: every client gets ERROR SHUTDOWN, the process exits 143."""
        clients = []
        for name in ("u1", "u2", "u3"):
            client, _ = yield self.handshake(name)
            clients.append(client)
        for client in clients[:2]:  # discard the later JOINs
            for _ in range(3 - clients.index(client) - 1):
                yield client.next()
        status = self.daemon.signal(signal.SIGTERM)
        for client in clients:
            ftype, payload = yield client.next()
            self.assertEqual(ftype, T.ERROR)
            self.assertTrue(payload.startswith(b"SHUTDOWN."), payload)
            yield client.closed
        self.assertEqual((yield status), 128 + signal.SIGTERM)
        self.assertIn("stopped: 3 connections closed", self.daemon.log)


class ReloadTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_sighup_applies_max_per_ip(self):
        """A lower CHATD_MAX_PER_IP in the env file counts after SIGHUP: the
        user already on stays, a second connection from 127.0.0.1 is refused."""
        envFile = os.path.abspath(self.mktemp())
        with open(envFile, "w") as f:
            f.write("CHATD_MAX_PER_IP=0\n")
        daemon = Daemon(
            "--stats-interval", "0", "--env-file", envFile, "--limit-exempt", "none"
        )  # fmt: skip
        self.addCleanup(daemon.stop)
        yield daemon.start()
        first = yield connect(daemon.port)
        self.addCleanup(first.transport.abortConnection)
        first.send(T.HELLO, b"first")
        self.assertEqual((yield first.next())[0], T.WELCOME)
        with open(envFile, "w") as f:
            f.write("CHATD_MAX_PER_IP=1\n")
        daemon.signal(signal.SIGHUP)
        yield daemon.waitForLog("reloaded: max_per_ip")
        second = yield connect(daemon.port)
        ftype, payload = yield second.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SERVER_FULL."), payload)
        yield second.closed
        first.send(T.ECHO, b"still on")
        self.assertEqual((yield first.next()), (T.ECHO, b"still on"))
