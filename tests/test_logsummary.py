"""LogSummary: a few lines, then one summary per interval per kind."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import (
    Logger,
    formatEvent,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from chatd.server.logsummary import LogSummary, keepRotated

KIND = "connections from {addresses} refused (max-per-ip)"


class LogSummaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.events = EventLoggingObserver()
        self.summary = LogSummary(
            self.clock, interval=10, first=3, logger=Logger(observer=self.events)
        )

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def flood(self, n: int, address: str = "10.0.0.5", kind: str = KIND) -> None:
        for i in range(n):
            self.summary.event(kind, address, "refused {i}", i=i)

    def test_first_lines_then_one_summary(self) -> None:
        """1,234 refusals in one interval: 3 lines, then one summary naming
        the count, the address and the interval."""
        self.flood(1234)
        self.assertEqual(len(self.lines()), 3)
        self.assertIn("more are summarised every 10 s", self.lines()[2])
        self.clock.advance(10)
        self.assertEqual(
            self.lines()[3],
            "1,231 connections from 10.0.0.5 refused (max-per-ip) in the last 10 s",
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sustained_flood_one_line_per_interval(self) -> None:
        """A flood for 60 s at 100 events a second costs 3 + 6 lines."""
        for _ in range(600):
            self.flood(10)
            self.clock.advance(0.1)
        self.clock.advance(10)
        lines = self.lines()
        self.assertLessEqual(len(lines), 3 + 7)
        self.assertEqual(sum("in the last 10 s" in line for line in lines[3:]), 6)
        total = 3 + sum(int(line.split()[0].replace(",", "")) for line in lines[3:])
        self.assertEqual(total, 6000)

    def test_quiet_interval_logs_in_full_again(self) -> None:
        self.flood(5)
        self.clock.advance(10)  # summary of 2
        self.clock.advance(10)  # a quiet interval
        self.flood(1)
        self.assertEqual(self.lines()[-1], "refused 0")

    def test_kinds_are_separate(self) -> None:
        self.flood(5)
        self.flood(2, kind="logins from {addresses} failed (wrong password)")
        self.assertEqual(len(self.lines()), 5)

    def test_many_addresses(self) -> None:
        self.flood(3)
        self.flood(50, "10.0.0.5")
        for i in range(20):
            self.flood(1, f"10.1.0.{i}")
        self.clock.advance(10)
        self.assertEqual(
            self.lines()[-1],
            "70 connections from 21 addresses (most from 10.0.0.5: 50) "
            "refused (max-per-ip) in the last 10 s",
        )

    def test_interval_zero_logs_everything(self) -> None:
        self.summary.interval = 0
        self.flood(50)
        self.assertEqual(len(self.lines()), 50)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_all(self) -> None:
        self.flood(10)
        self.assertEqual(self.summary.pending(), 1)
        self.summary.flushAll()
        self.assertIn("7 connections", self.lines()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class KeepRotatedTests(SynchronousTestCase):
    def test_rotated_files_bounded(self) -> None:
        """--log-keep reaches twistd's LogFile: rotations beyond N delete."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        logFile = LogFile("twistd.log", directory)
        self.addCleanup(logFile.close)
        observer = textFileLogObserver(logFile)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertGreaterEqual(keepRotated(2), 1)
        for i in range(6):
            logFile.write(f"line {i}\n")
            logFile.rotate()
        self.assertEqual(
            sorted(os.listdir(directory)),
            ["twistd.log", "twistd.log.1", "twistd.log.2"],
        )
        keepRotated(0)
        self.assertIsNone(logFile.maxRotatedFiles)
