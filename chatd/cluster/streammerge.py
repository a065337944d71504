"""One order out of several streams: merging an XREAD reply by number.

A node reads the cluster's stream and the streams of the rooms its users
are in, in ONE ``XREAD`` (docs/cluster.md, "Per-room streams").  Every
entry is numbered from the one ``chatd:seq`` by the script that appends it,
atomically, so when a reply shows entry N on any stream, every entry below
N on every stream read was already there: sorting the reply by number
gives the total order, except above the last number of a stream whose
reply ``COUNT`` cut short (more of it may lie below what another stream
shows).  Those entries are held back: not consumed, so the next read
brings them again with what they wait for.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatd.core.events import Event
from chatd.wire.eventcodec import BadEvent, decodeBatch

#: The cluster's stream (without the key prefix).
MAIN = b"stream"


def roomStream(roomKey: bytes) -> bytes:
    """The name (without the key prefix) of a room's stream."""
    return b"roomstream:" + roomKey


@dataclass
class Entry:
    """One stream entry, parsed: a run of events numbered ``first`` on,
    or a hand-over (no events: it lies between ``first - 1`` and
    ``first``)."""

    stream: bytes
    id: bytes
    first: int
    events: list[Event] = field(default_factory=list)
    #: The stream's last number before this entry (None: not given).
    prev: int | None = None
    node: bytes = b""
    handOver: bytes | None = None
    #: Room key -> the cursor of its stream (ROOM_JOINs, hand-overs).
    rooms: dict[bytes, bytes] = field(default_factory=dict)
    #: Why it could not be read (it is passed over, in its place).
    bad: str | None = None

    @property
    def last(self) -> int:
        """The number of its last event (``first - 1`` for none)."""
        return self.first + len(self.events) - 1

    @property
    def order(self) -> tuple[int, int]:
        """Its place: by number, a hand-over before the events it precedes."""
        return self.first, 1 if self.events else 0


def parseEntry(stream: bytes, entryId: bytes, fields: list[bytes], after: int) -> Entry:
    """An XREAD entry; a bad one is placed right after ``after`` (the last
    number of its stream before it) and marked."""
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    try:
        first = int(values[b"s"])
        events = decodeBatch(values[b"b"])
        prev = int(values[b"p"]) if b"p" in values else None
    except (KeyError, ValueError, BadEvent) as e:
        return Entry(stream, entryId, after + 1, bad=str(e) or type(e).__name__)
    pairs = values.get(b"r", b"").split()
    return Entry(
        stream,
        entryId,
        first,
        events,
        prev,
        values.get(b"n", b""),
        values.get(b"h"),
        dict(zip(pairs[::2], pairs[1::2], strict=False)),
    )


def parseReply(
    reply: object, prefix: bytes, lastNums: dict[bytes, int]
) -> dict[bytes, list[Entry]]:
    """An XREAD reply (``[[key, [[id, fields], ...]], ...]`` or None) by
    stream name; ``lastNums`` places bad entries."""
    parsed: dict[bytes, list[Entry]] = {}
    for key, entries in reply or ():  # type: ignore[attr-defined]
        name = bytes(key)[len(prefix) :]
        after = lastNums.get(name, 0)
        mine = parsed[name] = []
        for entryId, fields in entries:
            entry = parseEntry(name, bytes(entryId), fields, after)
            after = max(after, entry.last)
            mine.append(entry)
    return parsed


def merge(reply: dict[bytes, list[Entry]], count: int) -> list[Entry]:
    """The entries that may be delivered now, in the total order: all but
    those above the lowest last number of a stream cut by ``count``."""
    bound: float = float("inf")
    for entries in reply.values():
        if len(entries) >= count:
            bound = min(bound, entries[-1].last)
    ready = [
        entry
        for entries in reply.values()
        for entry in entries
        if (entry.first if entry.events else entry.first - 1) <= bound
    ]
    ready.sort(key=lambda entry: entry.order)  # stable: a stream's own order
    return ready
