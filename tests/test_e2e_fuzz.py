"""A short run of bench/fuzz.py: random frames against a real daemon."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.daemon import run


class FuzzRunTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_short_fuzz_run(self):
        """30,000 random frames: no traceback, nothing lost, daemon answers."""
        status, output = yield run(
            ["bench/fuzz.py", "--frames", "30000", "--connections", "4"]
        )
        self.assertIn("tracebacks in log:   0", output)
        self.assertIn("daemon answers ECHO: True", output)
        self.assertIn("0 out of order, 0 lost", output)
        self.assertEqual(status, 0, output)
