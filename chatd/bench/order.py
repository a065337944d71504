"""The total-order check: did every user see the broadcasts in one order?

Each user keeps a running hash of the (sender, seq) pairs it got and notes
it every :data:`ORDER_CHECKPOINT` messages; the parent counts, per
checkpoint, how many distinct hashes the users of every process noted.
Python hashes ints alike in every process, so the notes compare across
``--processes``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every this many MESSAGEs a user notes its running hash of their order.
ORDER_CHECKPOINT = 500


class RunningOrder:
    """One user's running hash of the messages it got, in their order."""

    __slots__ = ("received", "digest")

    def __init__(self) -> None:
        self.received = 0
        self.digest = 0

    def feed(self, sender: int, seq: int) -> str | None:
        """Add one message; at a checkpoint, the note ``"n:hash"`` to count."""
        self.received += 1
        self.digest = hash((self.digest, sender, seq))
        if self.received % ORDER_CHECKPOINT:
            return None
        return f"{self.received}:{self.digest}"


def orderDisagreements(parts: Iterable[dict[str, int]]) -> int:
    """Total order across users: every user's running hash of the messages
    it got, taken every ORDER_CHECKPOINT messages, must be the same at each
    checkpoint; each extra distinct hash at a checkpoint is a disagreement."""
    seen: dict[str, set[str]] = {}
    for orders in parts:
        for key in orders:
            point, _, digest = key.partition(":")
            seen.setdefault(point, set()).add(digest)
    return sum(len(digests) - 1 for digests in seen.values())
