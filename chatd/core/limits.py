"""Per-user and per-address limits: flood control for an open port."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one per message."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "seconds")

    def __init__(self, rate: float, burst: int, seconds: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.seconds = seconds
        self.stamp = seconds()

    def take(self) -> bool:
        """Spend a token if there is one."""
        now = self.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PerAddress:
    """Connections counted by peer host (``addr.host``, not the address tuple)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        if self.limit and self.counts[host] >= self.limit:
            return False
        self.counts[host] += 1
        return True

    def release(self, host: str) -> None:
        self.counts[host] -= 1
        if self.counts[host] <= 0:
            del self.counts[host]
