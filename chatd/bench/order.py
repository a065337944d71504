"""The total-order check: did every user see the broadcasts in one order?

Each user keeps a running hash of the (sender, seq) pairs it got,
``digest = hash((digest, sender, seq))`` from 0, and notes it every
:data:`ORDER_CHECKPOINT` messages (:func:`note`); the parent counts, per
checkpoint, how many distinct hashes the users of every process noted.
Python hashes ints alike in every process, so the notes compare across
``--processes``.  :class:`chatd.bench.fanout.FanUser` updates the hash
inline: it is on the path of every delivery, where a call costs ~6%.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every this many MESSAGEs a user notes its running hash of their order.
ORDER_CHECKPOINT = 500


def note(received: int, digest: int) -> str:
    """What a user notes at a checkpoint (``received`` a multiple of
    :data:`ORDER_CHECKPOINT`) for :func:`orderDisagreements`: ``"n:hash"``."""
    return f"{received}:{digest}"


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
