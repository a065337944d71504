"""End to end: how twistd starts, backgrounds, refuses and stops chatd."""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet import defer, reactor
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import TWISTD, Daemon, connect, freePort, run


def processGone(pid: int) -> defer.Deferred:
    """Fires when process ``pid`` (not our child) has exited: a pidfd says so."""
    fd = os.pidfd_open(pid)
    d: defer.Deferred = defer.Deferred()

    class Reader:
        def fileno(self) -> int:
            return fd

        def doRead(self) -> None:
            reactor.removeReader(self)
            os.close(fd)
            d.callback(None)

        def logPrefix(self) -> str:
            return "pidfd"

        def connectionLost(self, reason: object) -> None:
            pass

    reactor.addReader(Reader())
    return d


class TwistdTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_background_pidfile_logfile(self):
        """``twistd chatd`` backgrounds, writes pid and log files, stops on SIGTERM."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        pidfile = os.path.join(tmp, "chatd.pid")
        logfile = os.path.join(tmp, "chatd.log")
        port = freePort()
        status, output = yield run(
            [
                *TWISTD[1:],
                f"--pidfile={pidfile}",
                f"--logfile={logfile}",
                "chatd",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ]
        )
        self.assertEqual(status, 0, output)
        with open(pidfile) as f:
            pid = int(f.read())
        gone = processGone(pid)
        client = yield connect(port)
        client.send(T.ECHO, b"ping")
        self.assertEqual((yield client.next()), (T.ECHO, b"ping"))
        os.kill(pid, signal.SIGTERM)
        yield client.closed
        yield gone
        self.assertFalse(os.path.exists(pidfile))
        with open(logfile) as f:
            log = f.read()
        self.assertIn("state STARTING -> ACTIVE", log)
        self.assertIn("connect conn=1", log)
        self.assertIn("state STOPPING -> STOPPED", log)

    @defer.inlineCallbacks
    def test_port_taken(self):
        """A taken port: non-zero exit, one clear line, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            daemon = Daemon(
                command=["chatd", "--listen", f"tcp:{port}:interface=127.0.0.1"]
            )
            self.addCleanup(daemon.stop)
            yield self.assertFailure(daemon.start(), RuntimeError)
            status = yield daemon.watch.ended
        self.assertNotEqual(status, 0)
        self.assertIn(f"chatd: cannot listen on tcp:{port}", daemon.log)
        self.assertIn("state STARTING -> FAILED", daemon.log)
        self.assertNotIn("Traceback", daemon.log)

    @defer.inlineCallbacks
    def test_bad_option_is_usage_error(self):
        """A bad value names the option, exits non-zero, no traceback."""
        status, output = yield run(
            [*TWISTD[1:], "-n", "chatd", "--max-clients", "lots"]
        )
        self.assertNotEqual(status, 0)
        self.assertIn("--max-clients: bad value 'lots'", output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_bad_environment_is_usage_error(self):
        status, output = yield run(
            [*TWISTD[1:], "-n", "chatd"], env={"CHATD_IDLE_TIMEOUT": "-1"}
        )
        self.assertNotEqual(status, 0)
        self.assertIn("CHATD_IDLE_TIMEOUT: bad value '-1'", output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_tac_file_from_environment(self):
        """``twistd -ny chatd.tac`` serves the same protocol, configured by env."""
        port = freePort()
        daemon = Daemon(
            command=["-y", "chatd.tac"],
            env={
                "CHATD_LISTEN": f"tcp:{port}:interface=127.0.0.1",
                "CHATD_MAX_CLIENTS": "1",
            },
        )
        self.addCleanup(daemon.stop)
        yield daemon.start()
        first = yield connect(port)
        self.addCleanup(first.transport.abortConnection)
        first.send(T.HELLO, b"tac")
        self.assertEqual((yield first.next())[0], T.WELCOME)
        second = yield connect(port)
        ftype, payload = yield second.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SERVER_FULL."), payload)
        yield second.closed

    @defer.inlineCallbacks
    def test_sigint_stops_cleanly(self):
        daemon = Daemon("--stats-interval", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        status = yield daemon.signal(signal.SIGINT)
        self.assertIn(status, (0, 128 + signal.SIGINT))
        self.assertIn("state STOPPING -> STOPPED", daemon.log)

    @defer.inlineCallbacks
    def test_stats_line(self):
        """The stats line comes every --stats-interval, with the counters."""
        daemon = Daemon("--stats-interval", "0.2")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        client = yield connect(daemon.port)
        client.send(T.ECHO, b"x")
        yield client.next()
        yield daemon.waitForLog("frames_in=1 ")
        line = [x for x in daemon.log.splitlines() if "frames_in=1 " in x][0]
        self.assertIn("connections=1 ", line)
        self.assertIn("errors: none", line)
        client.transport.loseConnection()
