"""A smoke run of the benchmark suite: one short scenario, report written."""

from __future__ import annotations

import json
import os
import shutil
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from tests.daemon import ROOT, environment


class SuiteSmokeTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_smoke_echo(self):
        """bench/run.py --smoke: chatd and the naive server, clean, reported."""
        out = os.path.abspath(self.mktemp())
        stdout, stderr, status = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["bench/run.py", "--smoke", "--only", "echo", "--out", out],
            env=environment(),
            path=str(ROOT),
        )
        self.assertEqual(status, 0, stderr.decode())
        with open(f"{out}/benchmarks.json") as f:
            data = json.load(f)
        pair = data["results"]["echo 10x4"]
        for kind in ("chatd", "naive"):
            self.assertTrue(pair[kind]["ok"], pair[kind])
            self.assertGreater(pair[kind]["completed"], 0)
        with open(f"{out}/benchmarks.md") as f:
            text = f.read()
        self.assertIn("| echo 10x4 |", text)
        self.assertIn(f"Python {sys.version.split()[0]}", text)

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
        self.assertEqual(sorted(pair), ["chatd", "floor", "naive"])
        for kind, result in pair.items():
            self.assertEqual(result["integrity_failures"], 0, kind)
            self.assertGreater(result["completed"], 0, kind)
        with open(f"{out}/benchmarks.md") as f:
            self.assertIn("The kernel's share", f.read())
