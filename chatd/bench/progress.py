"""The live progress line on stderr while the load runs.

:func:`progressLine` is the text (pure); :class:`Progress` samples the
parts' counters on a timer and writes it: a bar with throughput that
redraws itself on a tty, or one plain line a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Protocol

from twisted.internet import task

#: Columns of the bar, and of the blanks that wipe it at the end.
BAR_WIDTH = 30
WIPE_WIDTH = 90


class Counted(Protocol):
    """Anything with running (count, bytes) totals: a load part."""

    def progress(self) -> tuple[int, int]: ...


def progressLine(
    style: str,
    elapsed: float,
    duration: float,
    count: int,
    rate: float,
    mbs: float,
    unit: str,
) -> str:
    """One update: ``bar`` redraws in place (``\\r``), ``lines`` appends."""
    if style == "bar":
        done = min(elapsed / duration, 1.0) if duration else 1.0
        bar = "#" * int(done * BAR_WIDTH)
        return (
            f"\r[{bar:<{BAR_WIDTH}}] {elapsed:5.1f}/{duration:.0f}s "
            f"{rate:12,.0f} {unit}/s {mbs:8.1f} MB/s"
        )
    return (
        f"{elapsed:6.1f}s {count:12d} {unit} {rate:12,.0f} {unit}/s {mbs:8.1f} MB/s\n"
    )


class Progress:
    """A live line on stderr: a bar with throughput on a tty, or plain lines."""

    def __init__(
        self, style: str, duration: float, unit: str, parts: Sequence[Counted]
    ) -> None:
        if style == "auto":
            style = "bar" if sys.stderr.isatty() else "off"
        self.style = style
        self.duration = duration
        self.unit = unit
        self.parts = parts
        self.began = time.monotonic()
        self.last = (self.began, 0, 0)
        self.loop = task.LoopingCall(self.show)

    def start(self) -> None:
        if self.style != "off":
            self.loop.start(0.5 if self.style == "bar" else 1.0, now=False)

    def show(self) -> None:
        now = time.monotonic()
        count = sum(p.progress()[0] for p in self.parts)
        size = sum(p.progress()[1] for p in self.parts)
        then, count0, size0 = self.last
        self.last = (now, count, size)
        rate = (count - count0) / max(now - then, 1e-9)
        mbs = (size - size0) / max(now - then, 1e-9) / 1e6
        sys.stderr.write(
            progressLine(
                self.style, now - self.began, self.duration, count, rate, mbs, self.unit
            )
        )
        sys.stderr.flush()

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()
            if self.style == "bar":
                sys.stderr.write("\r" + " " * WIPE_WIDTH + "\r")
                sys.stderr.flush()
