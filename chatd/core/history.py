"""History: the last events of each room, for HISTORY and for a resume.

Protocol 1.2 numbers each event of a room's order (docs/protocol.md,
"History and resume"): frame ``i`` of the event with sequence number
``seq`` is number ``seq << 16 | i`` (:func:`number`), so numbers increase
along the room's order, are the same in every process that sees the
sequence, and need no counter of their own.  :class:`History` keeps the
last events of each room, bounded in count and in bytes, as the events
themselves (each codec spells them when they are replayed); a room that
ends drops its history.  It is pure data: :mod:`chatd.core.roomcast`
records into it as it delivers, so the history has exactly the events
members were given, at their places.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from chatd.core.events import Event

#: Bits of a number that count the frames within one event.
INDEX_BITS = 16
#: Frames one event may spell as and still be numbered one by one.
MAX_FRAMES = 1 << INDEX_BITS
#: Bytes a header adds to a payload (the estimate of an event's size).
_HEADER = 8


def number(seq: int, index: int = 0) -> int:
    """The protocol's number of frame ``index`` of the event ``seq``."""
    return seq << INDEX_BITS | index


def split(value: int) -> tuple[int, int]:
    """A number back as (event seq, frame index)."""
    return value >> INDEX_BITS, value & (MAX_FRAMES - 1)


def size(event: Event) -> int:
    """About the bytes ``event`` takes as chatd frames (its spelling if it
    has one already), for the byte bound."""
    if event.frame is not None:
        return len(event.frame)
    text = getattr(event, "text", b"") or getattr(event, "topic", b"")
    user = getattr(event, "user", None)
    prefix = len(user.prefix) if user is not None else 0
    room = event.room
    return _HEADER + prefix + len(text) + (len(room) + 1 if room else 0) + 8


class IHistoryStore(Interface):
    """Where the rooms' last events are kept: :class:`History` in memory,
    or a store that also writes them to disk (chatd.server.historystore)."""

    limit = Attribute("Events kept per room at most (a reload may change it).")
    maxBytes = Attribute("Bytes of events kept per room at most.")
    rooms = Attribute("How many rooms have events kept.")
    heldBytes = Attribute("Bytes of events kept, in all rooms.")

    def record(roomKey: bytes, event: Event) -> None:
        """``event`` (sequenced) happened in the room keyed ``roomKey``."""

    def drop(roomKey: bytes) -> None:
        """The room ended (its last member left)."""

    def after(roomKey: bytes, since: int) -> tuple[int | None, list[tuple[Event, int]]]:
        """What follows number ``since`` (:meth:`History.after`)."""

    def last(
        roomKey: bytes, count: int, before: int | None = None
    ) -> list[tuple[Event, int, int]]:
        """The room's last ``count`` frames (:meth:`History.last`)."""

    def __len__() -> int:
        """Events kept, in all rooms."""


class _Log:
    """One room's kept events and what they weigh."""

    __slots__ = ("events", "bytes", "gone")

    def __init__(self) -> None:
        self.events: deque[tuple[Event, int]] = deque()
        self.bytes = 0
        #: The seq of the newest event dropped (0: none yet).
        self.gone = 0


@implementer(IHistoryStore)
class History:
    """The last ``limit`` events (at most ``maxBytes``) of every room."""

    def __init__(self, limit: int = 100, maxBytes: int = 65536) -> None:
        self.limit = limit
        self.maxBytes = maxBytes
        self._rooms: dict[bytes, _Log] = {}

    def record(self, roomKey: bytes, event: Event) -> None:
        """``event`` (sequenced) happened in the room keyed ``roomKey``."""
        if self.limit <= 0:
            return
        log = self._rooms.get(roomKey)
        if log is None:
            log = self._rooms[roomKey] = _Log()
        weight = size(event)
        log.events.append((event, weight))
        log.bytes += weight
        events = log.events
        while len(events) > self.limit or (
            log.bytes > self.maxBytes and len(events) > 1
        ):
            old, oldWeight = events.popleft()
            log.bytes -= oldWeight
            log.gone = old.seq

    def drop(self, roomKey: bytes) -> None:
        """The room ended: its history goes with it."""
        self._rooms.pop(roomKey, None)

    def clear(self) -> None:
        """Every room's history goes (read again from elsewhere)."""
        self._rooms.clear()

    def roomKeys(self) -> list[bytes]:
        """The rooms that have events kept."""
        return list(self._rooms)

    def gone(self, roomKey: bytes) -> int:
        """The seq of the room's newest dropped event (0: none)."""
        log = self._rooms.get(roomKey)
        return log.gone if log is not None else 0

    def forgot(self, roomKey: bytes, gone: int) -> None:
        """Events of the room up to seq ``gone`` were dropped before (a
        store read back from disk): :meth:`after` says so."""
        log = self._rooms.get(roomKey)
        if log is not None:
            log.gone = max(log.gone, gone)

    def after(
        self, roomKey: bytes, since: int
    ) -> tuple[int | None, list[tuple[Event, int]]]:
        """What follows number ``since`` in the room: (the number of the
        oldest event still held if events after ``since`` were dropped,
        else None; the (event, first frame index) still held)."""
        seq, index = split(since)
        log = self._rooms.get(roomKey)
        if log is None:
            return None, []
        held = [
            (event, index + 1 if event.seq == seq else 0)
            for event, _ in log.events
            if event.seq > seq or (event.seq == seq and event.count > index + 1)
        ]
        if log.gone > seq:
            first = held[0][0].seq if held else log.gone + 1
            return number(first), held
        return None, held

    def last(
        self, roomKey: bytes, count: int, before: int | None = None
    ) -> list[tuple[Event, int, int]]:
        """The last ``count`` frames of the room (before number ``before``),
        oldest first, as (event, first frame, frame after the last)."""
        log = self._rooms.get(roomKey)
        if log is None or count <= 0:
            return []
        limit = None if before is None else split(before)
        picked: list[tuple[Event, int, int]] = []
        for event, _ in reversed(log.events):
            stop = event.count
            if limit is not None:
                if event.seq > limit[0]:
                    continue
                if event.seq == limit[0]:
                    stop = min(stop, limit[1])
            if stop <= 0:
                continue
            first = max(0, stop - count)
            picked.append((event, first, stop))
            count -= stop - first
            if count <= 0:
                break
        picked.reverse()
        return picked

    def __len__(self) -> int:
        """Events held, in all rooms."""
        return sum(len(log.events) for log in self._rooms.values())

    @property
    def heldBytes(self) -> int:
        return sum(log.bytes for log in self._rooms.values())

    @property
    def rooms(self) -> int:
        return len(self._rooms)
