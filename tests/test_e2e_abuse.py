"""End to end: issue 14's attacks against a real daemon with its defaults.

``--limit-exempt none`` makes loopback count as a public address.  The
attacker connects from 127.0.0.1; legitimate users from other loopback
addresses (127.0.0.2, ...), which Linux routes like any other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.task import deferLater
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import Daemon, FrameClient

ATTACKER = "127.0.0.1"


def connectFrom(
    port: int, source: str = ATTACKER, kind: type[FrameClient] = FrameClient
) -> defer.Deferred:
    endpoint = endpoints.TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, bindAddress=(source, 0)
    )
    return endpoint.connect(protocol.Factory.forProtocol(kind))


def nextOrClose(client: FrameClient, timeout: float = 5.0) -> defer.Deferred:
    """The next frame, or None if the connection closes or ``timeout`` passes."""
    d = client.next()
    d.addErrback(lambda _: None)

    def expire() -> None:
        if d in client.waiting:
            client.waiting.remove(d)
            d.callback(None)

    call = reactor.callLater(timeout, expire)
    d.addBoth(lambda result: (call.cancel() if call.active() else None, result)[1])
    return d


class AbuseTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def daemon(self, *options: str):
        daemon = Daemon("--stats-interval", "0", "--limit-exempt", "none", *options)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def join(self, daemon, name: bytes, source: str, kind=FrameClient):
        client = yield connectFrom(daemon.port, source, kind)
        self.addCleanup(client.transport.abortConnection)
        client.send(T.HELLO, name)
        self.assertEqual((yield client.next())[0], T.WELCOME)
        client.send(T.READY)
        self.assertEqual((yield client.next())[0], T.JOIN)
        return client

    @defer.inlineCallbacks
    def test_slot_hogger(self):
        """One address holding slots and reconnecting at once: beyond 20 it
        gets SERVER_FULL naming max-per-ip; 25 newcomers all join."""
        daemon = yield self.daemon()
        hog = []
        for _ in range(20):
            client = yield connectFrom(daemon.port)
            self.addCleanup(client.transport.abortConnection)
            client.send(T.ECHO, b"mine")
            self.assertEqual((yield client.next()), (T.ECHO, b"mine"))
            hog.append(client)
        refusals = []
        for _ in range(10):  # reconnecting as soon as it is closed
            client = yield connectFrom(daemon.port)
            refusals.append((yield nextOrClose(client, timeout=1.0)))
            if not client.closed.called:
                client.transport.abortConnection()
            yield client.closed
        ftype, payload = refusals[0]
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SERVER_FULL.too many connections"))
        self.assertIn(b"max-per-ip 20", payload)
        self.assertTrue(all(r and r[1].startswith(b"SERVER_FULL.") for r in refusals))
        joined = 0
        for i in range(25):
            yield self.join(daemon, b"new%d" % i, f"127.0.0.{i + 2}")
            joined += 1
        self.assertEqual(joined, 25)

    @defer.inlineCallbacks
    def test_connection_churn_bounded(self):
        """connect/HELLO/READY/close as fast as possible for 2 s: at most
        --connect-burst + --connect-rate x 2 s joins, and a watcher sees
        JOIN/LEAVE only for those."""
        daemon = yield self.daemon()
        watcher = yield self.join(daemon, b"watcher", "127.0.0.2")
        start = reactor.seconds()
        joins = refused = 0
        reason = b""
        while reactor.seconds() - start < 2.0:
            client = yield connectFrom(daemon.port)
            client.send(T.HELLO, b"churn")
            client.send(T.READY)
            frame = yield nextOrClose(client)
            if frame and frame[0] == T.WELCOME:
                yield client.next()  # its JOIN
                joins += 1
                client.transport.loseConnection()
            else:
                refused += 1
                reason = frame[1] if frame else reason
            yield client.closed
        elapsed = reactor.seconds() - start
        self.assertLessEqual(joins, 20 + 5 * elapsed + 2)
        self.assertGreater(refused, 0)
        self.assertIn(b"connect-rate 5/s", reason)
        watcher.send(T.ECHO, b"end")
        seen = []
        while (frame := (yield watcher.next())) != (T.ECHO, b"end"):
            seen.append(frame[0])
        self.assertLessEqual(len(seen), 2 * joins)

    @defer.inlineCallbacks
    def test_password_guessing_slowed(self):
        """A guesser for 3 s gets a handful of passwords checked (one per
        growing delay), not thousands; another address logs in at once."""
        secret = tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False)
        self.addCleanup(os.unlink, secret.name)
        secret.write("opensesame\n")
        secret.close()
        daemon = yield self.daemon(
            "--password-file", secret.name, "--connect-rate", "0"
        )
        start = reactor.seconds()
        attempts = checked = 0
        while reactor.seconds() - start < 3.0:
            client = yield connectFrom(daemon.port)
            client.send(T.HELLO, b"bob.guess%d" % attempts)
            attempts += 1
            frame = yield nextOrClose(client, timeout=0.3)
            if not (frame and b"password not checked" in frame[1]):
                checked += 1
            client.transport.abortConnection()
            yield client.closed
        elapsed = reactor.seconds() - start
        self.assertGreater(attempts, 10)  # it kept trying
        self.assertLessEqual(checked, 5, f"{checked} of {attempts} checked")
        self.assertLessEqual(checked / elapsed, 2.0)
        began = reactor.seconds()
        user = yield connectFrom(daemon.port, "127.0.0.2")
        self.addCleanup(user.transport.abortConnection)
        user.send(T.HELLO, b"alice.opensesame")
        self.assertEqual((yield user.next())[0], T.WELCOME)
        self.assertLess(reactor.seconds() - began, 0.25)

    @defer.inlineCallbacks
    def test_log_lines_bounded(self):
        """Churn, refused reconnects, wrong passwords and bad frames for
        3 s: the log grows by a bounded number of lines."""
        secret = tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False)
        self.addCleanup(os.unlink, secret.name)
        secret.write("opensesame\n")
        secret.close()
        daemon = yield self.daemon("--password-file", secret.name)
        before = daemon.log.count("\n")
        start = reactor.seconds()
        attempts = 0
        while reactor.seconds() - start < 3.0:
            client = yield connectFrom(daemon.port)
            attempts += 1
            client.send(T.WHO)  # NOT_READY
            client.send(T.HELLO, b"bob.guess%d" % attempts)
            yield nextOrClose(client, timeout=0.05)
            client.transport.abortConnection()
            yield client.closed
        lines = daemon.log.count("\n") - before
        self.assertGreater(attempts, 100)
        # 20 + 5/s connections get in (a connect line each, and their
        # errors and login failures are a few lines plus summaries).
        self.assertLess(lines, 120, f"{lines} lines for {attempts} attempts")

    @defer.inlineCallbacks
    def test_pipelining_flooder_does_not_cut_off_readers(self):
        """A flooder pipelining 5,000 SAYs gets RATE_LIMITED; ten readers on
        slow links (about 250 KB/s each) are not cut off as SLOW_CONSUMER."""
        daemon = yield self.daemon()
        readers = []
        for i in range(10):
            reader = yield self.join(
                daemon, b"reader%d" % i, f"127.0.0.{i + 2}", PacedReader
            )
            readers.append(reader)
        flooder = yield self.join(daemon, b"flooder", ATTACKER)
        for reader in readers:
            reader.transport.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024
            )
            reader.pace()
            self.addCleanup(reader.stopPacing)
        text = b"f" * 1000
        flooder.transport.write(
            b"".join(
                T.SAY.to_bytes(4, "big") + len(text).to_bytes(4, "big") + text
                for _ in range(5000)
            )
        )
        flooder.send(T.ECHO, b"done")
        limited = 0
        while (frame := (yield flooder.next())) != (T.ECHO, b"done"):
            if frame[0] == T.ERROR:
                self.assertTrue(frame[1].startswith(b"RATE_LIMITED."), frame)
                limited += 1
            if frame[0] == T.LEAVE:
                self.assertFalse(frame[1].endswith(b".slow"), frame)
        self.assertGreater(limited, 4000)
        yield deferLater(reactor, 1.0, lambda: None)  # the readers catch up
        for reader in readers:
            reader.send(T.ECHO, b"still here")
        for reader in readers:
            while (frame := (yield reader.next())) != (T.ECHO, b"still here"):
                self.assertNotEqual(frame[0], T.ERROR, frame)
        self.assertNotIn("reason=slow", daemon.log)


class PacedReader(FrameClient):
    """A client on a slow link: reads at most ``perTick`` bytes a tick."""

    perTick = 25_000
    tick = 0.1
    _loop: task.LoopingCall | None = None

    def pace(self) -> None:
        self.budget = self.perTick
        self._loop = task.LoopingCall(self._refill)
        self._loop.start(self.tick, now=False)

    def stopPacing(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _refill(self) -> None:
        self.budget = self.perTick
        if self.transport.connected:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._loop is not None:
            self.budget -= len(data)
            if self.budget <= 0:
                self.transport.pauseProducing()


def rotated(path: str, inode: int) -> bool:
    return os.path.exists(path) and os.stat(path).st_ino != inode


@defer.inlineCallbacks
def until(predicate, limit: float = 20.0):
    """Poll ``predicate`` (a file's state: nothing to wait on but polling)."""
    deadline = reactor.seconds() + limit
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        yield deferLater(reactor, 0.02, lambda: None)


class LogKeepTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_rotated_files_bounded(self):
        """twistd --logfile with --log-keep 2: after five rotations (SIGUSR1)
        the log and two rotated files are left, not six files."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "chatd.log")
        daemon = Daemon(
            command=["--logfile", path, "chatd", "--listen", "tcp:0:interface=127.0.0.1",
                     "--stats-interval", "0", "--log-keep", "2"]
        )  # fmt: skip
        self.addCleanup(daemon.stop)
        daemon.start().addErrback(lambda _: None)  # it logs to the file instead

        def logged(text: str) -> bool:
            try:
                with open(path) as f:
                    return text in f.read()
            except FileNotFoundError:
                return False

        yield until(lambda: logged("ready: accepting connections"))
        for _ in range(5):
            inode = os.stat(path).st_ino
            daemon.process.signalProcess(signal.SIGUSR1)
            yield until(lambda old=inode: rotated(path, old))
        self.assertEqual(
            sorted(os.listdir(directory)), ["chatd.log", "chatd.log.1", "chatd.log.2"]
        )
