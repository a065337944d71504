"""Log lines an attacker cannot multiply: a few, then one summary per interval.

Refusals, login failures and protocol errors are each one line per event,
and every event is something a client can cause as often as it likes.
:class:`LogSummary` logs the first few events of a kind in full; after
that, events of the kind are only counted, and once per interval one line
sums them up::

    1,234 connections from 10.0.0.5 refused (max-per-ip) in the last 10 s

A flood therefore costs at most ``first`` lines plus one line per interval
per kind, whatever its rate or the number of addresses it comes from.  A
timer runs only while a summary is pending, so a quiet server schedules
nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="chatd")

#: Addresses counted one by one in a summary; the rest only in the total.
MAX_ADDRESSES = 1000


class _Window:
    """One kind's current interval."""

    __slots__ = ("start", "budget", "logged", "suppressed", "byAddress", "flush")

    def __init__(self, start: float, budget: int) -> None:
        self.start = start
        self.budget = budget
        self.logged = 0
        self.suppressed = 0
        self.byAddress: Counter[str] = Counter()
        self.flush: Any = None


class LogSummary:
    """Rate-limited logging by kind, on ``clock`` (a reactor or task.Clock).

    ``kind`` is the summary's wording, with ``{addresses}`` where the
    address (or "N addresses (most from A: M)") goes.  An ``interval`` of 0
    logs every event.
    """

    def __init__(
        self,
        clock: Any,
        interval: float = 10.0,
        first: int = 5,
        logger: Logger = log,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.first = first
        self.log = logger
        self._windows: dict[str, _Window] = {}

    def event(self, kind: str, address: str, format: str, **fields: object) -> bool:
        """Log ``format`` with ``fields``, or count it for the summary.

        Returns whether the line was logged.
        """
        if not self.interval:
            self.log.info(format, **fields)
            return True
        now = self.clock.seconds()
        window = self._windows.get(kind)
        if window is None or (
            window.flush is None and now >= window.start + self.interval
        ):
            # Quiet for a whole interval: log the first few in full again.
            window = self._windows[kind] = _Window(now, self.first)
        if window.logged < window.budget:
            window.logged += 1
            if window.logged == window.budget:
                format += " (more are summarised every {summaryInterval:g} s)"
                fields["summaryInterval"] = self.interval
            self.log.info(format, **fields)
            return True
        window.suppressed += 1
        if address in window.byAddress or len(window.byAddress) < MAX_ADDRESSES:
            window.byAddress[address] += 1
        if window.flush is None:
            due = max(0.0, window.start + self.interval - now)
            window.flush = self.clock.callLater(due, self._flush, kind)
        return False

    def _flush(self, kind: str) -> None:
        """Sum the interval up; the next one logs nothing in full while the
        flood goes on (its budget is 0)."""
        window = self._windows[kind]
        window.flush = None
        self._summarise(kind, window)
        self._windows[kind] = _Window(self.clock.seconds(), 0)

    def _summarise(self, kind: str, window: _Window) -> None:
        if not window.suppressed:
            return
        self.log.info(
            "{summary}",
            summary=f"{window.suppressed:,} "
            + kind.format(addresses=describe(window))
            + f" in the last {self.interval:g} s",
            kind=kind,
            count=window.suppressed,
        )

    def flushAll(self) -> None:
        """Log every pending summary now and cancel the timers (at stop)."""
        for kind, window in self._windows.items():
            if window.flush is not None:
                window.flush.cancel()
                window.flush = None
                self._summarise(kind, window)
        self._windows.clear()

    def pending(self) -> int:
        """How many summaries are waiting for their interval to end."""
        return sum(1 for w in self._windows.values() if w.flush is not None)


def describe(window: _Window) -> str:
    """``10.0.0.5``, or ``3 addresses (most from 10.0.0.5: 1,200)``."""
    counts = window.byAddress
    if len(counts) == 1 and sum(counts.values()) == window.suppressed:
        return next(iter(counts))
    if not counts:
        return "unknown addresses"
    top, n = counts.most_common(1)[0]
    more = "+" if len(counts) >= MAX_ADDRESSES else ""
    return f"{len(counts):,}{more} addresses (most from {top}: {n:,})"


def keepRotated(count: int) -> int:
    """Bound the rotated files of twistd's log file to ``count`` (0: keep
    all, twistd's own default); returns how many log files were set.

    ``LogFile.maxRotatedFiles`` is public and honoured at every rotation,
    by size (1 MB) or on SIGUSR1; only finding the file takes internals.
    """
    from chatd.server.internals import twistdLogFiles

    files = twistdLogFiles()
    for logFile in files:
        logFile.maxRotatedFiles = count or None
    return len(files)
