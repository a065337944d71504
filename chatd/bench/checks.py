"""Load generators and integrity checkers for chatd-bench, free of sockets.

Everything here is pure so the tests can hand it a stream with a gap, a
duplicate, a reorder or a flipped byte and see it reported.  The Twisted
clients in :mod:`chatd.bench.load` only feed these objects.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable

from chatd.wire import MAX_PAYLOAD, FrameType

#: How many examples of a failure to keep for the report (the counts are exact).
EXAMPLES = 5


class PayloadGenerator:
    """Random request type, size and bytes, reproducible from one seed.

    Each connection gets its own generator, seeded from the run's seed and
    the connection's number, so a failing frame can be regenerated offline.
    """

    def __init__(
        self, seed: int, maxSize: int = MAX_PAYLOAD, types: Iterable[int] = (1,)
    ) -> None:
        self.random = random.Random(seed)
        self.maxSize = maxSize
        self.types = tuple(types)

    def next(self) -> tuple[int, bytes]:
        r = self.random
        ftype = self.types[0] if len(self.types) == 1 else r.choice(self.types)
        return ftype, r.randbytes(r.randint(0, self.maxSize))

    def splits(self, length: int) -> list[int]:
        """Random cut points in ``0 < cut < length`` (sorted) for --split."""
        if length < 2:
            return []
        r = self.random
        return sorted(r.sample(range(1, length), min(r.randint(1, 3), length - 1)))


#: The reply each request type gets.
REPLY: dict[int, int] = {FrameType.ECHO: FrameType.ECHO, FrameType.PING: FrameType.PONG}


def firstDifference(a: bytes, b: bytes) -> int:
    """Index of the first differing byte (or the shorter length)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class EchoChecker:
    """The replies one connection expects, in order, compared byte for byte."""

    def __init__(self) -> None:
        self.pending: deque[tuple[int, bytes, int]] = deque()
        self.completed = 0
        self.mismatches = 0
        self.unexpected = 0
        self.examples: list[str] = []

    def sent(self, ftype: int, payload: bytes, stamp: int) -> None:
        self.pending.append((REPLY.get(ftype, ftype), payload, stamp))

    def received(self, ftype: int, payload: bytes) -> int | None:
        """Check one reply; returns the request's stamp, None if unexpected."""
        if not self.pending:
            self.unexpected += 1
            self._example(f"unexpected frame type {ftype} size {len(payload)}")
            return None
        rtype, expected, stamp = self.pending.popleft()
        self.completed += 1
        if rtype != ftype or payload != expected:
            self.mismatches += 1
            self._example(
                f"reply #{self.completed}: type {ftype} (expected {rtype}), "
                f"size {len(payload)} (expected {len(expected)}), first "
                f"difference at byte {firstDifference(payload, expected)}"
            )
        return stamp

    def _example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    @property
    def outstanding(self) -> int:
        return len(self.pending)


# -- fan-out messages ---------------------------------------------------------


def sayText(sender: int, seq: int, stamp: int, size: int) -> bytes:
    """``sender.seq.stamp.`` in ASCII digits, padded with ``x`` to ``size``.

    Valid one-line UTF-8 text by construction; never shorter than its digits.
    """
    head = b"%d.%d.%d." % (sender, seq, stamp)
    return head + b"x" * (size - len(head)) if size > len(head) else head


def parseMessage(payload: bytes) -> tuple[int, int, int]:
    """(sender, seq, stamp) from a MESSAGE ``id.color.name.`` + :func:`sayText`.

    Raises ValueError (or IndexError) for anything else.
    """
    fields = payload.split(b".", 6)
    return int(fields[3]), int(fields[4]), int(fields[5])


def roomParser(room: bytes) -> Callable[[bytes], tuple[int, int, int]]:
    """:func:`parseMessage` for ROOM_MESSAGE ``room.id.color.name.`` +
    :func:`sayText` of one room (a ValueError for another room's)."""

    def parse(payload: bytes) -> tuple[int, int, int]:
        fields = payload.split(b".", 7)
        if fields[0] != room:
            raise ValueError(f"ROOM_MESSAGE of room {fields[0]!r}")
        return int(fields[4]), int(fields[5]), int(fields[6])

    return parse


class SequenceChecker:
    """Per sender: every sequence number once, complete and in order.

    A number above the next expected one opens a *gap* (the numbers skipped
    are remembered); one that fills a remembered hole later is a *reorder*
    (and closes that gap); any other number at or below the highest seen is
    a *duplicate*.  Missing numbers at the end of a stream are found by
    :meth:`tailGaps` once the sender's final count is known.
    """

    MAX_HOLES = 100_000

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.holes: dict[int, set[int]] = {}
        self.lostHoles = 0  # holes beyond MAX_HOLES: counted, not remembered
        self.received = 0
        self.duplicates = 0
        self.reorders = 0
        self.examples: list[str] = []

    def feed(self, sender: int, seq: int) -> None:
        self.received += 1
        last = self.last.get(sender, -1)
        if seq == last + 1:
            self.last[sender] = seq
        elif seq > last:
            holes = self.holes.setdefault(sender, set())
            room = self.MAX_HOLES - len(holes)
            missing = seq - last - 1
            holes.update(range(last + 1, last + 1 + min(missing, max(room, 0))))
            self.lostHoles += max(missing - max(room, 0), 0)
            self.last[sender] = seq
            self._example(f"sender {sender}: got {seq} after {last}")
        elif seq in self.holes.get(sender, ()):
            self.holes[sender].discard(seq)
            self.reorders += 1
            self._example(f"sender {sender}: {seq} arrived late (after {last})")
        else:
            self.duplicates += 1
            self._example(f"sender {sender}: {seq} again (highest {last})")

    @property
    def gaps(self) -> int:
        return sum(map(len, self.holes.values())) + self.lostHoles

    def _example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


def tailGaps(sent: dict[int, int], lastSeen: dict[int, Counter]) -> int:
    """Messages missing at the ends of streams.

    ``sent[s]`` is how many messages sender ``s`` sent; ``lastSeen[s]`` counts
    users by the highest sequence number they saw from ``s`` (-1: none).
    """
    missing = 0
    for sender, count in sent.items():
        for last, users in lastSeen.get(sender, Counter()).items():
            missing += max(count - 1 - int(last), 0) * users
    return missing


# -- latency ------------------------------------------------------------------


class Histogram:
    """Latencies in microseconds, in buckets of under 1% width, mergeable.

    Values below 256 us are exact; above, the 8 most significant bits are
    kept.  That bounds memory whatever the run length, and histograms from
    several load processes add up exactly.
    """

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    def add(self, us: int) -> None:
        if us < 0:
            us = 0
        shift = us.bit_length() - 8
        if shift > 0:
            us = us >> shift << shift
        counts = self.counts
        counts[us] = counts.get(us, 0) + 1

    def merge(self, other: Histogram) -> None:
        for value, n in other.counts.items():
            self.counts[value] = self.counts.get(value, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> int | None:
        """The smallest bucket at or below which ``p`` percent of samples lie."""
        total = self.total
        if not total:
            return None
        rank = max(1, -(-total * p // 100))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return max(self.counts)

    def summary(self) -> dict[str, int | None]:
        return {
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": max(self.counts) if self.counts else None,
        }

    def toJSON(self) -> dict[str, int]:
        return {str(k): v for k, v in self.counts.items()}

    @classmethod
    def fromJSON(cls, data: dict[str, int]) -> Histogram:
        return cls({int(k): v for k, v in data.items()})
