"""The stats line: one log event per interval while the counters move.

An operator tailing the log sees traffic as it happens and silence when
there is none (one line says activity stopped), instead of a line every
interval forever.  A TimerService, so the service starts and stops it with
everything else and a reload replaces it when ``--stats-interval`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import internet
from twisted.logger import Logger

log = Logger(namespace="chatd")


class StatsLine(internet.TimerService):
    """Logs ``snapshot()`` (counters, and ``errors`` by code) every
    ``interval`` seconds on ``clock``, while it differs from the last."""

    name = "stats"

    def __init__(
        self, interval: float, snapshot: Callable[[], dict], clock: Any
    ) -> None:
        super().__init__(interval, self.logStats)
        self.clock = clock
        self.snapshot = snapshot
        self._last = snapshot()
        self._moving = False

    def logStats(self) -> None:
        snap = self.snapshot()
        if snap == self._last:
            if self._moving:
                self._moving = False
                log.info("stats idle: no change since the last stats line")
            return
        self._last = snap
        self._moving = True
        snap = dict(snap)
        errors = " ".join(f"{k}={v}" for k, v in snap.pop("errors").items())
        log.info(
            "stats {counters} errors: {errors}",
            counters=" ".join(f"{k}={v}" for k, v in snap.items()),
            errors=errors or "none",
        )
