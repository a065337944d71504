"""Per-user and per-address limits: flood control for an open port."""

from __future__ import annotations

from collections import Counter, OrderedDict
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


class BucketTable:
    """A :class:`TokenBucket` per key (an address), in bounded memory.

    A bucket that has filled up again is the same as no bucket, so it is
    dropped; a full table drops its least recently used bucket, so a flood
    of distinct keys costs at most ``capacity`` buckets (and an evicted key
    merely starts again with a full bucket).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        seconds: Callable[[], float],
        capacity: int = 10_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.seconds = seconds
        self.capacity = capacity
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self.buckets)

    def take(self, key: str) -> bool:
        """Spend one of ``key``'s tokens if it has one (always, when off)."""
        if not self.rate:
            return True
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(
                self.rate, self.burst, self.seconds
            )
        else:
            self.buckets.move_to_end(key)
        self._prune()
        return bucket.take()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again."""
        bucket = self.buckets.get(key)
        if bucket is None or not self.rate:
            return 0.0
        now = self.seconds()
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        return max(0.0, (1 - tokens) / self.rate)

    def _prune(self) -> None:
        """Drop refilled buckets from the old end (two per call: amortised
        O(1), and the table keeps up with any rate of new keys), then
        whatever is over capacity."""
        buckets = self.buckets
        full = self.burst / self.rate
        now = self.seconds()
        for _ in range(2):
            key, oldest = next(iter(buckets.items()))
            if len(buckets) > 1 and now - oldest.stamp >= full:
                del buckets[key]
            else:
                break
        while len(buckets) > self.capacity:
            buckets.popitem(last=False)

    def reset(self, rate: float, burst: int) -> None:
        """New settings (a reload): everyone starts with a full bucket."""
        self.rate, self.burst = rate, burst
        self.buckets.clear()
