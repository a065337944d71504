"""chatd-bench against a real daemon: short runs, zero integrity failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial import unittest

from chatd.server.config import Options
from tests.daemon import ROOT, Daemon, environment

BENCH = [sys.executable, "-c", "from chatd.bench.cli import main; main()"]
#: A benchmark server: no message rate limit (chatd will rate-limit by default).
BENCH_SERVER = ("--stats-interval", "0", "--shutdown-grace", "2", "--rate-limit", "0")


@defer.inlineCallbacks
def startDaemon(*options: str):  # type: ignore[no-untyped-def]
    """A started ``twistd chatd`` on port 0 of 127.0.0.1 (read back from its
    port file)."""
    daemon = Daemon(*options)
    try:
        yield daemon.start()
    except BaseException:
        yield daemon.stop()
        raise
    return daemon


def bench(*args: str) -> defer.Deferred:
    """Run chatd-bench; fires with (json result, exit status, stderr)."""
    d = utils.getProcessOutputAndValue(
        BENCH[0], [*BENCH[1:], *args], env=environment(), path=str(ROOT)
    )

    def parse(r):
        out, err, status = r
        return json.loads(out), status, err.decode()

    return d.addCallback(parse)


class BenchTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        # Two listeners: the second lets a run spread over two addresses.
        self.daemon = yield startDaemon(
            *BENCH_SERVER, "--listen", "tcp:0:interface=127.0.0.1:backlog=512"
        )
        self.addCleanup(self.daemon.stop)
        self.server = f"127.0.0.1:{self.daemon.port}"

    def assertClean(self, result, status, err):
        self.assertEqual(result["integrity_failures"], 0, (result, err))
        self.assertTrue(result["ok"])
        self.assertEqual(status, 0, err)
        self.assertGreater(result["completed"], 0)
        self.assertIsNotNone(result["latency_us"]["p99"])

    @defer.inlineCallbacks
    def test_echo_split(self):
        """Echo with random split writes: every reply identical, in order."""
        result, status, err = yield bench(
            "echo", self.server, "--connections", "8", "--depth", "4",
            "--duration", "1", "--split", "--ping", "--seed", "5", "--json",
        )  # fmt: skip
        self.assertClean(result, status, err)
        self.assertEqual(result["seed"], 5)
        self.assertEqual(result["sent"], result["completed"])

    @defer.inlineCallbacks
    def test_fanout_two_processes(self):
        """Fan-out over two load processes: every user saw every message."""
        result, status, err = yield bench(
            "fanout", self.server, "--receivers", "10", "--senders", "2",
            "--size", "100", "--window", "8", "--duration", "1",
            "--processes", "2", "--json",
        )  # fmt: skip
        self.assertClean(result, status, err)
        self.assertEqual(result["processes"], 2)
        # Every message reached all 12 users (senders see their own copy).
        self.assertEqual(result["completed"], result["messages_sent"] * 12)

    @defer.inlineCallbacks
    def test_fanout_spread_over_two_listeners_one_order(self):
        """Users spread over two addresses (as over the nodes of a cluster):
        every user saw every message, in one order (the cross-user order
        check compares running hashes every 500 messages)."""
        server = ",".join(f"127.0.0.1:{p}" for p in self.daemon.ports())
        self.assertEqual(server.count(","), 1)
        result, status, err = yield bench(
            "fanout", server, "--receivers", "6", "--senders", "2",
            "--size", "64", "--window", "16", "--duration", "1", "--json",
        )  # fmt: skip
        self.assertClean(result, status, err)
        self.assertEqual(result["order_disagreements"], 0)
        self.assertGreater(result["completed"], 1000)  # checkpoints were taken

    @defer.inlineCallbacks
    def test_integrity_failure_exits_nonzero(self):
        """SAY text too long for the server: ERRORs, gaps, exit status 1."""
        result, status, err = yield bench(
            "fanout", self.server, "--receivers", "2", "--senders", "1",
            "--size", "1010", "--window", "2", "--duration", "0.3", "--json",
        )  # fmt: skip
        self.assertEqual(status, 1, err)
        self.assertFalse(result["ok"])
        self.assertGreater(result["errors"].get("TOO_LONG", 0), 0)


class _Bench(protocol.ProcessProtocol):
    """chatd-bench as a child, killed if it outlives ``deadline`` (a hang)."""

    def __init__(self, deadline: float) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred = defer.Deferred()
        self.printed: defer.Deferred = defer.Deferred()
        self.killer = reactor.callLater(deadline, self.kill)

    def kill(self) -> None:
        self.transport.signalProcess("KILL")

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.printed.called and b"\n" in self.out:
            self.printed.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        if self.killer.active():
            self.killer.cancel()
        status = reason.value.exitCode
        if status is None:
            status = 128 + reason.value.signal
        self.ended.callback((status, self.out.decode(), self.err.decode()))


def spawnBench(*args: str, deadline: float = 20) -> _Bench:
    proc = _Bench(deadline)
    argv = [*BENCH, *args]
    reactor.spawnProcess(proc, argv[0], argv, env=environment(), path=str(ROOT))
    return proc


def perAddressLimit(n: int) -> list[str]:
    """Options that make chatd refuse loopback beyond ``n`` connections (once
    loopback is exempt by default, ``--limit-exempt none`` lifts that)."""
    exempt = ["--limit-exempt", "none"] if "limit-exempt" in str(Options()) else []
    return ["--max-per-ip", str(n), *exempt]


class BenchFailureTests(unittest.TestCase):
    """Refusals, dead ports, rate limits and Ctrl-C: one line, an exit status
    that says which, and no hang (every run is killed at its deadline)."""

    timeout = 60

    @defer.inlineCallbacks
    def startDaemon(self, *options: str):  # type: ignore[no-untyped-def]
        self.daemon = yield startDaemon(*BENCH_SERVER, *options)
        self.addCleanup(self.daemon.stop)

    def passwordFile(self) -> str:
        path = os.path.abspath(self.mktemp())  # the daemon runs elsewhere
        with open(path, "w") as f:
            f.write("sesame\n")
        return path

    def assertOneLine(self, err: str, pattern: str) -> None:
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], pattern)
        self.assertNotIn("Traceback", err)
        self.assertNotIn("Failure", err)

    @defer.inlineCallbacks
    def test_fanout_refused_by_max_per_ip(self):
        """SERVER_FULL for some users: exit 3 at once, saying how many and why."""
        yield self.startDaemon(*perAddressLimit(3))
        status, out, err = yield spawnBench(
            "fanout", f"127.0.0.1:{self.daemon.port}", "--receivers", "10",
            "--duration", "1",
        ).ended  # fmt: skip
        self.assertEqual(status, 3, err)
        self.assertOneLine(
            err,
            r"^chatd-bench: \d+ users refused: SERVER_FULL too many connections "
            r"from 127\.0\.0\.1",
        )
        self.assertIn(f"fanout -> 127.0.0.1:{self.daemon.port}", out)

    @defer.inlineCallbacks
    def test_password(self):
        """Without the password every user is refused (counted across load
        processes); with --password-file the run is clean."""
        path = self.passwordFile()
        yield self.startDaemon("--password-file", path)
        server = f"127.0.0.1:{self.daemon.port}"
        status, out, err = yield spawnBench(
            "fanout", server, "--receivers", "5", "--senders", "1",
            "--processes", "2", "--duration", "1",
        ).ended  # fmt: skip
        self.assertEqual(status, 3, err)
        self.assertOneLine(
            err,
            r"^chatd-bench: 6 users refused: AUTH_FAILED .*--password-file\)$",
        )
        status, out, err = yield spawnBench(
            "echo", server, "--connections", "4", "--duration", "0.5",
            "--password-file", path,
        ).ended  # fmt: skip
        self.assertEqual(status, 0, err)
        self.assertIn("result: OK", out)

    @defer.inlineCallbacks
    def test_echo_without_password_is_quick(self):
        """Echo refused by the password: no 15 s drain, no Failure reprs."""
        path = self.passwordFile()
        yield self.startDaemon("--password-file", path)
        proc = spawnBench(
            "echo", f"127.0.0.1:{self.daemon.port}", "--duration", "2", deadline=10
        )
        status, out, err = yield proc.ended
        self.assertEqual(status, 3, err)
        self.assertOneLine(err, r"^chatd-bench: 10 connections refused: AUTH_FAILED")

    @defer.inlineCallbacks
    def test_every_address_is_used(self):
        """A live daemon and a dead port: the connections given the dead one
        are refused (so the run spreads over both), exit 3."""
        daemon = yield startDaemon(*BENCH_SERVER)
        self.addCleanup(daemon.stop)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.addCleanup(closed.close)
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
        server = f"127.0.0.1:{daemon.port},{dead}"
        status, out, err = yield spawnBench(
            "echo", server, "--connections", "4", "--duration", "1"
        ).ended
        self.assertEqual(status, 3, err)
        self.assertIn("connection refused", err)

    @defer.inlineCallbacks
    def test_nothing_listening(self):
        """A dead port: exit 3 naming HOST:PORT; --connections 0: usage (2)."""
        closed = socket.socket()  # bound, never listening: connections refused
        closed.bind(("127.0.0.1", 0))
        self.addCleanup(closed.close)
        server = f"127.0.0.1:{closed.getsockname()[1]}"
        status, out, err = yield spawnBench("echo", server, "--duration", "1").ended
        self.assertEqual(status, 3, err)
        self.assertOneLine(
            err, rf"^chatd-bench: cannot connect to {server}: connection refused$"
        )
        status, out, err = yield spawnBench("echo", server, "--connections", "0").ended
        self.assertEqual(status, 2, err)
        self.assertIn("--connections: '0': must be at least 1", err)

    @defer.inlineCallbacks
    def test_rate_limited_fails_fast(self):
        """A rate-limiting server ends a 60 s run at once, with advice."""
        yield self.startDaemon("--rate-limit", "5", "--rate-burst", "1")
        status, out, err = yield spawnBench(
            "fanout", f"127.0.0.1:{self.daemon.port}", "--receivers", "1",
            "--duration", "60",
        ).ended  # fmt: skip
        self.assertEqual(status, 4, err)
        self.assertOneLine(err, r"RATE_LIMITED.*--rate-limit 0$")


class _Silent(protocol.Protocol):
    """Accepts and never answers: a server stuck, or not chatd at all."""

    def connectionMade(self) -> None:
        self.factory.open.append(self)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.open.remove(self)
        if not self.factory.open and self.factory.allClosed is not None:
            self.factory.allClosed.callback(None)


class SilentServerTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        factory = protocol.Factory.forProtocol(_Silent)
        factory.open = []
        factory.allClosed = None
        self.factory = factory
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.server = f"127.0.0.1:{self.port.getHost().port}"
        self.addCleanup(self.closeAll)

    def closeAll(self) -> defer.Deferred:
        """Stop listening; wait until every accepted connection is gone."""
        self.factory.allClosed = defer.Deferred()
        if not self.factory.open:
            self.factory.allClosed.callback(None)
        for proto in list(self.factory.open):
            proto.transport.abortConnection()
        return defer.gatherResults([self.port.stopListening(), self.factory.allClosed])

    @defer.inlineCallbacks
    def test_setup_timeout(self):
        """Users never ACTIVE: the run ends at --setup-timeout, exit 3."""
        status, out, err = yield spawnBench(
            "fanout", self.server, "--receivers", "3", "--setup-timeout", "1",
            deadline=15,
        ).ended  # fmt: skip
        self.assertEqual(status, 3, err)
        self.assertEqual(
            err, "chatd-bench: 4 users not active after 1 s (--setup-timeout)\n"
        )

    @defer.inlineCallbacks
    def test_ctrl_c(self):
        """Ctrl-C while waiting for users: exit 130 with one line."""
        proc = spawnBench("fanout", self.server, "--setup-timeout", "60")
        yield proc.printed  # the run header: its SIGINT handler is in place
        proc.transport.signalProcess(signal.SIGINT)
        status, out, err = yield proc.ended
        self.assertEqual(status, 130, err)
        self.assertEqual(
            err, "chatd-bench: interrupted while connecting 11 users; no results\n"
        )
