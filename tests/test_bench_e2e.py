"""chatd-bench against a real daemon: short runs, zero integrity failures."""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from tests.daemon import ROOT, Daemon, environment

BENCH = [sys.executable, "-c", "from chatd.bench.cli import main; main()"]


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
        self.daemon = Daemon(
            "--stats-interval", "0", "--shutdown-grace", "2", "--rate-limit", "0"
        )
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
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
    def test_integrity_failure_exits_nonzero(self):
        """SAY text too long for the server: ERRORs, gaps, exit status 1."""
        result, status, err = yield bench(
            "fanout", self.server, "--receivers", "2", "--senders", "1",
            "--size", "1010", "--window", "2", "--duration", "0.3", "--json",
        )  # fmt: skip
        self.assertEqual(status, 1, err)
        self.assertFalse(result["ok"])
        self.assertGreater(result["errors"].get("TOO_LONG", 0), 0)
