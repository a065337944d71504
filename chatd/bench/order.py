"""The total-order check: did every user see the broadcasts in one order?

Each user keeps a running hash of the (sender, seq) pairs it got,
``digest = hash((digest, sender, seq))`` from 0, and notes it every
:data:`ORDER_CHECKPOINT` messages (:func:`note`); the parent counts, per
checkpoint, how many distinct hashes the users of every process noted.
Python hashes ints alike in every process, so the notes compare across
``--processes``.  With ``--rooms`` each room has its own order: a note
carries the room (``"room/n:hash"``), so only members of one room are
compared, and each member also notes its whole stream at the end
(:func:`endNote`), so members that got different messages disagree too.  :class:`chatd.bench.fanout.FanUser` updates the hash
inline: it is on the path of every delivery, where a call costs ~6%.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every this many MESSAGEs a user notes its running hash of their order.
ORDER_CHECKPOINT = 500


def note(received: int, digest: int, room: str = "") -> str:
    """What a user notes at a checkpoint (``received`` a multiple of
    :data:`ORDER_CHECKPOINT`) for :func:`orderDisagreements`: ``"n:hash"``,
    or ``"room/n:hash"`` for a member of ``room``."""
    return f"{room}/{received}:{digest}" if room else f"{received}:{digest}"


def endNote(received: int, digest: int, room: str) -> str:
    """What a member of ``room`` notes once every message has arrived:
    ``"room/end:n.hash"``, the same for every member of a clean room."""
    return f"{room}/end:{received}.{digest}"


def _digests(parts: Iterable[dict[str, int]]) -> dict[str, set[str]]:
    """Checkpoint (``n`` or ``room/n``) -> the distinct hashes noted at it."""
    seen: dict[str, set[str]] = {}
    for orders in parts:
        for key in orders:
            point, _, digest = key.partition(":")
            seen.setdefault(point, set()).add(digest)
    return seen


def orderDisagreements(parts: Iterable[dict[str, int]]) -> int:
    """Total order across users: every user's running hash of the messages
    it got, taken every ORDER_CHECKPOINT messages, must be the same at each
    checkpoint; each extra distinct hash at a checkpoint is a disagreement."""
    return sum(len(digests) - 1 for digests in _digests(parts).values())


def roomsOutOfOrder(parts: Iterable[dict[str, int]]) -> int:
    """How many rooms had a checkpoint whose members disagreed."""
    seen = _digests(parts)
    return len({point.partition("/")[0] for point in seen if len(seen[point]) > 1})
