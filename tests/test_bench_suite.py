"""A smoke run of the benchmark suite: one short scenario, report written."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from tests.daemon import ROOT, environment


def benchModule(name: str):  # type: ignore[no-untyped-def]
    """bench/NAME.py, imported by path (bench/ is scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "bench"))  # run.py imports `server`
    try:
        spec = importlib.util.spec_from_file_location(
            f"bench_{name}", ROOT / "bench" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


class SuiteServerTests(unittest.SynchronousTestCase):
    def test_chatd_runs_without_rate_limit(self):
        """The suite's chatd has no message rate limit (chatd-bench would
        stop at the first RATE_LIMITED), whatever the caller adds."""
        server = benchModule("server")
        run = benchModule("run")
        argv = server.chatdArgv(7777, *run.CHATD_OPTIONS)
        options = argv[argv.index("chatd") + 1 :]
        rate = len(options) - 1 - options[::-1].index("--rate-limit")
        self.assertEqual(options[rate + 1], "0")


class PeerTableTests(unittest.SynchronousTestCase):
    def test_ratios(self):
        """chatd/peer for the rate and for CPU per unit; '-' without a figure."""
        table = benchModule("peertable")
        run = benchModule("run")

        def result(perSecond: float, cpu: float | None) -> dict:
            return {
                "deliveries_per_s": perSecond,
                "cpu_ns_per_unit": cpu,
                "latency_us": {"p99": 1500},
                "integrity_failures": 0,
                "steal_share": 0.02,
            }

        results = {
            "fanout x": {"chatd": result(300, 50.0), "uvloop": result(200, 100.0)},
            "fanout y": {"chatd": result(300, None), "naive": result(1, 1.0)},
        }
        lines = table.peerTable(results, "uvloop", run.rate, run.ms, run.steal, "py")
        self.assertEqual(
            lines[-1],
            "| fanout x | 300 | 200 | 1.50x | 50.0 | 100.0 | 0.50x | 1.50 | 0 | 2%/2% |",
        )
        noPeer = {"y": results["fanout y"]}
        self.assertEqual(
            table.peerTable(noPeer, "uvloop", run.rate, run.ms, run.steal, "py"), []
        )


class SuiteSmokeTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_smoke_echo(self):
        """bench/run.py --smoke: chatd and the naive server, clean, reported;
        with --rounds 2 each figure is the median of two interleaved runs."""
        out = os.path.abspath(self.mktemp())
        os.makedirs(out)
        marker = benchModule("run").MARKER
        with open(f"{out}/benchmarks.md", "w") as f:
            f.write(f"# By hand\n\nHow to run it.\n\n{marker}\n\nSTALE TABLE\n")
        stdout, stderr, status = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["bench/run.py", "--smoke", "--only", "echo", "--out", out]
            + ["--rounds", "2", "--servers", "chatd,naive"],
            env=environment(),
            path=str(ROOT),
        )
        self.assertEqual(status, 0, stderr.decode())
        with open(f"{out}/benchmarks.json") as f:
            data = json.load(f)
        pair = data["results"]["echo 10x4"]
        self.assertEqual(sorted(pair), ["chatd", "naive"])  # --servers
        for kind in ("chatd", "naive"):
            self.assertTrue(pair[kind]["ok"], pair[kind])
            self.assertGreater(pair[kind]["completed"], 0)
            self.assertEqual(len(pair[kind]["rounds"]), 2)
        with open(f"{out}/benchmarks.md") as f:
            text = f.read()
        self.assertIn("| echo 10x4 |", text)
        self.assertIn("2 interleaved rounds per server", text)
        self.assertIn(f"Python {sys.version.split()[0]}", text)
        # The hand-written part above the marker is kept; the rest replaced.
        self.assertTrue(text.startswith(f"# By hand\n\nHow to run it.\n\n{marker}\n"))
        self.assertNotIn("STALE TABLE", text)
        self.assertIn("## Suite results", text)

    @defer.inlineCallbacks
    def test_smoke_c_load_and_floor(self):
        """--load c: bench/loadgen.c drives chatd, the naive server and the C
        floor (bench/floor.c), every delivery checked; the floor is reported."""
        if shutil.which("gcc") is None and shutil.which("cc") is None:
            raise unittest.SkipTest("no C compiler")
        out = os.path.abspath(self.mktemp())
        argv = ["bench/run.py", "--smoke", "--only", "fanout", "--load", "c"]
        stdout, stderr, status = yield utils.getProcessOutputAndValue(
            sys.executable, [*argv, "--out", out], env=environment(), path=str(ROOT)
        )
        self.assertEqual(status, 0, stderr.decode())
        with open(f"{out}/benchmarks.json") as f:
            data = json.load(f)
        self.assertEqual(data["load"], "c")
        pair = data["results"]["fanout 1x10 64B"]
        peers = benchModule("peertable").available()
        self.assertEqual(sorted(pair), sorted(["chatd", "floor", "naive", *peers]))
        for kind, result in pair.items():
            self.assertEqual(result["integrity_failures"], 0, kind)
            self.assertGreater(result["completed"], 0, kind)
        with open(f"{out}/benchmarks.md") as f:
            text = f.read()
        self.assertIn("The kernel's share", text)
        # A new report starts with docs/benchmarks.md's hand-written part.
        self.assertIn("## Running chatd-bench by hand", text)


class RoundsTests(unittest.SynchronousTestCase):
    def test_median_round_with_every_rate(self):
        """Each server's figure is its median round; every round's rate is
        kept, and one unclean round makes the figure unclean."""
        rounds = benchModule("rounds")

        def run(rate: float, failures: int = 0) -> dict:
            return {
                "deliveries_per_s": rate,
                "cpu_ns_per_unit": 1e9 / rate,
                "integrity_failures": failures,
                "ok": failures == 0,
            }

        def rate(r: dict) -> float:
            return r["deliveries_per_s"]

        chosen = rounds.median([run(3.0), run(1.0), run(2.0, failures=1)], rate)
        self.assertEqual(chosen["deliveries_per_s"], 2.0)
        self.assertEqual([r["rate"] for r in chosen["rounds"]], [3.0, 1.0, 2.0])
        self.assertEqual(chosen["integrity_failures"], 1)
        self.assertFalse(chosen["ok"])
        clean = rounds.median([run(5.0), run(4.0)], rate)
        self.assertEqual(clean["deliveries_per_s"], 4.0)  # the lower middle
        self.assertTrue(clean["ok"])
        self.assertRaises(ValueError, rounds.median, [], rate)

    def test_interleaved(self):
        """Servers take turns, round after round."""
        order: list[str] = []
        runs = benchModule("rounds").interleaved(
            ["chatd", "peer"], 2, lambda kind: order.append(kind) or {"kind": kind}
        )
        self.assertEqual(order, ["chatd", "peer", "chatd", "peer"])
        self.assertEqual([r["kind"] for r in runs["peer"]], ["peer", "peer"])
