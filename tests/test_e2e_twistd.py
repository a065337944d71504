"""End to end: how twistd starts, backgrounds, refuses and stops chatd."""

from __future__ import annotations

import os
import pwd
import signal
import socket

from twisted.internet import defer, reactor
from twisted.trial import unittest

from chatd import __version__
from chatd.wire import FrameType as T
from tests.daemon import (
    LOOPBACK,
    ROOT,
    TWISTD,
    Daemon,
    connect,
    portOf,
    readPortFile,
    run,
)


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


def takenPort(testCase: unittest.TestCase) -> int:
    """A loopback port something is listening on, for the test's duration."""
    s = socket.socket()
    testCase.addCleanup(s.close)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s.getsockname()[1]


class TwistdTests(unittest.TestCase):
    timeout = 60

    def tmpdir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def background(self, *chatd: str, logfile: str = "chatd.log") -> defer.Deferred:
        """``twistd chatd ...`` in the background, its pid file and log file
        (``logfile``) in ``self.dir``; fires with (status, output)."""
        self.dir = self.tmpdir()
        return run(
            [
                *TWISTD[1:],
                f"--pidfile={self.dir}/chatd.pid",
                f"--logfile={self.dir}/{logfile}",
                "chatd",
                *chatd,
            ]
        )

    def assertOneLine(self, output: str, line: str) -> None:
        """``output`` is ``line`` and nothing else (no usage, no traceback)."""
        self.assertEqual(output.splitlines(), [line], output)

    @defer.inlineCallbacks
    def test_background_pidfile_logfile(self):
        """``twistd chatd`` backgrounds, writes pid, port and log files, stops
        on SIGTERM; the port file is there once the foreground twistd exits."""
        portfile = os.path.abspath(self.mktemp())
        status, output = yield self.background(
            "--listen", LOOPBACK, "--port-file", portfile
        )
        self.assertEqual(status, 0, output)
        pidfile = os.path.join(self.dir, "chatd.pid")
        logfile = os.path.join(self.dir, "chatd.log")
        with open(pidfile) as f:
            pid = int(f.read())
        gone = processGone(pid)
        [(role, kind, where)] = readPortFile(portfile)
        self.assertEqual((role, kind), ("chat", "tcp"))
        client = yield connect(portOf(where))
        client.send(T.ECHO, b"ping")
        self.assertEqual((yield client.next()), (T.ECHO, b"ping"))
        os.kill(pid, signal.SIGTERM)
        yield client.closed
        yield gone
        self.assertFalse(os.path.exists(pidfile))
        self.assertFalse(os.path.exists(portfile))
        with open(logfile) as f:
            log = f.read()
        self.assertIn("state STARTING -> ACTIVE", log)
        self.assertIn(f"ready: accepting connections on tcp {where}", log)
        self.assertIn("connect conn=1", log)
        self.assertIn("state STOPPING -> STOPPED", log)

    @defer.inlineCallbacks
    def test_port_taken(self):
        """A taken port: exit 1 and one plain line, no traceback, no errno;
        from the plugin and from chatd.tac alike."""
        port = takenPort(self)
        results = yield defer.gatherResults(
            [
                run(
                    [
                        *TWISTD[1:],
                        "-n",
                        "--pidfile=",
                        "chatd",
                        "--listen",
                        f"tcp:{port}",
                    ]
                ),
                run(
                    [*TWISTD[1:], "-ny", str(ROOT / "chatd.tac"), "--pidfile="],
                    env={"CHATD_LISTEN": f"tcp:{port}"},
                ),
            ]
        )
        for status, output in results:
            self.assertEqual(status, 1)
            self.assertOneLine(
                output,
                f"chatd: cannot listen on tcp:{port}: address already in use "
                "(is another chatd running?)",
            )

    @defer.inlineCallbacks
    def test_port_taken_background(self):
        """In the background too: the same line, not twistd's truncated
        ``An error has occurred: b"..."``."""
        port = takenPort(self)
        status, output = yield self.background(
            "--listen", f"tcp:{port}:interface=127.0.0.1"
        )
        self.assertEqual(status, 1)
        self.assertOneLine(
            output,
            f"chatd: cannot listen on tcp:{port}:interface=127.0.0.1: address "
            "already in use (is another chatd running?)",
        )
        self.assertFalse(os.path.exists(f"{self.dir}/chatd.pid"))

    @defer.inlineCallbacks
    def test_missing_log_directory(self):
        """The README's background command with no log directory: one line
        naming the directory to create, not a traceback."""
        status, output = yield self.background(
            "--listen", LOOPBACK, logfile="missing/chatd.log"
        )
        tmp = self.dir
        self.assertEqual(status, 1)
        self.assertEqual(
            output.splitlines(),
            [
                f"chatd: --logfile: directory {tmp}/missing does not exist "
                f"(create it first: mkdir -p {tmp}/missing)",
                "see twistd chatd --help",
            ],
        )

    @defer.inlineCallbacks
    def test_bad_options_are_one_line(self):
        """A bad value: its option, what is wanted and a hint; no usage text,
        no ``invalid literal for int()``."""
        cases = {
            ("--max-clients", "abc"): "chatd: --max-clients: must be a whole "
            "number of at least 1, not 'abc'",
            ("--listen", "tcp:notaport"): "chatd: --listen: bad endpoint "
            "tcp:notaport: 'notaport' is not a number",
            ("--listen", "unix:/nonexistent-chatd/chatd.sock"): "chatd: --listen: "
            "unix:/nonexistent-chatd/chatd.sock: directory /nonexistent-chatd does "
            "not exist (create it first: mkdir -p /nonexistent-chatd)",
            ("--no-such-option",): "chatd: option --no-such-option not recognized",
        }
        results = yield defer.gatherResults(
            [run([*TWISTD[1:], "-n", "chatd", *args]) for args in cases]
        )
        for (args, line), (status, output) in zip(cases.items(), results, strict=True):
            self.assertEqual(status, 1, args)
            self.assertEqual(
                output.splitlines(), [line, "see twistd chatd --help"], args
            )

    @defer.inlineCallbacks
    def test_bad_environment_is_usage_error(self):
        status, output = yield run(
            [*TWISTD[1:], "-n", "chatd"], env={"CHATD_IDLE_TIMEOUT": "-1"}
        )
        self.assertEqual(status, 1)
        self.assertEqual(
            output.splitlines()[0],
            "chatd: CHATD_IDLE_TIMEOUT: must be a number of seconds, 0 or more, "
            "not '-1'",
        )

    @defer.inlineCallbacks
    def test_version(self):
        """``twistd chatd --version`` and the help say chatd's version."""
        status, output = yield run([*TWISTD[1:], "chatd", "--version"])
        self.assertEqual((status, output), (0, f"chatd {__version__}\n"))
        status, output = yield run([*TWISTD[1:], "chatd", "--help"])
        self.assertEqual(status, 0)
        self.assertIn(f"chatd {__version__}", output)

    @defer.inlineCallbacks
    def test_tac_file_from_environment(self):
        """``twistd -ny chatd.tac`` serves the same protocol, configured by env."""
        daemon = Daemon(
            command=["-y", str(ROOT / "chatd.tac")],
            env={"CHATD_LISTEN": LOOPBACK, "CHATD_MAX_CLIENTS": "1"},
        )
        self.addCleanup(daemon.stop)
        yield daemon.start()
        first = yield connect(daemon.port)
        self.addCleanup(first.transport.abortConnection)
        first.send(T.HELLO, b"tac")
        self.assertEqual((yield first.next())[0], T.WELCOME)
        second = yield connect(daemon.port)
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
        """The stats line comes every --stats-interval while counters move,
        then one idle line; an unknown CHATD_ variable is warned about; the
        ready line gives plain addresses."""
        daemon = Daemon("--stats-interval", "0.2", env={"CHATD_MAX_CLIENT": "5"})
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.assertIn(
            f"ready: accepting connections on tcp 127.0.0.1:{daemon.port}\n",
            daemon.log,
        )
        self.assertIn(
            "environment: unknown variable CHATD_MAX_CLIENT ignored", daemon.log
        )
        client = yield connect(daemon.port)
        client.send(T.ECHO, b"x")
        yield client.next()
        yield daemon.waitForLog("frames_in=1 ")
        line = [x for x in daemon.log.splitlines() if "frames_in=1 " in x][0]
        self.assertIn("connections=1 ", line)
        self.assertIn("errors: none", line)
        yield daemon.waitForLog("stats idle")
        self.assertNotIn("IPv4Address", daemon.log)
        client.transport.loseConnection()

    @defer.inlineCallbacks
    def test_low_port_as_nobody(self):
        """``--uid nobody --gid nogroup`` with a port below 1024: bound as
        root, then served as nobody."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("binding a port below 1024 needs root")
        nobody = pwd.getpwnam("nobody")
        for port in range(1023, 900, -1):  # the first that is free
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            daemon = Daemon(command=["--uid", "nobody", "--gid", str(nobody.pw_gid)])
            os.chmod(daemon.dir, 0o777)  # the port file is written as nobody
            daemon.args += [
                "chatd",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--port-file",
                daemon.portFile,
                "--stats-interval",
                "0",
            ]
            self.addCleanup(daemon.stop)
            try:
                yield daemon.start()
            except RuntimeError:
                if "address already in use" in daemon.log:
                    continue  # taken since we looked: try the next one
                raise
            break
        else:
            raise unittest.SkipTest("no free port below 1024")
        self.assertEqual(daemon.port, port)
        with open(f"/proc/{daemon.process.pid}/status") as f:
            ids = dict(line.split(":", 1) for line in f.read().splitlines())
        self.assertEqual(ids["Uid"].split(), [str(nobody.pw_uid)] * 4)
        self.assertEqual(ids["Gid"].split(), [str(nobody.pw_gid)] * 4)
        client = yield connect(port)
        client.send(T.HELLO, b"low")
        self.assertEqual((yield client.next())[0], T.WELCOME)
        client.transport.loseConnection()
