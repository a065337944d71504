"""A smoke run of the benchmark suite: one short scenario, report written."""

from __future__ import annotations

import json
import os
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
