"""A ``--redis`` node's history, as it read it from the streams.

Every node reads the cluster's stream and its rooms' streams, in order,
with their numbers, so for those rooms it keeps the same
:class:`~chatd.core.history.History` one process keeps (fed by
:mod:`chatd.core.roomcast` as it delivers).  At start it is seeded from
the cluster stream's tail, and a room from its own stream's tail when the
node starts reading it (bounded by ``--history``), so HISTORY and replays
reach back across a node restart and to before a room's first member
here: the streams are the history.  What the node never read (before its
seed, across a gap) it says is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from chatd.core.events import Event, Notice
from chatd.core.history import number, split
from chatd.core.roomevents import RoomLock
from chatd.core.rooms import key
from chatd.wire.eventcodec import BadEvent, decodeBatch

if TYPE_CHECKING:
    from chatd.cluster.node import ClusterNode
    from chatd.core.history import History
    from chatd.core.hub import Hub

log = Logger(namespace="chatd.cluster")


class StreamHistory:
    """The hub's history, seeded from and kept in step with the stream."""

    def __init__(self, node: ClusterNode, hub: Hub, history: History) -> None:
        self.link = node.link
        self.seq = node.seq
        self.hub = hub
        self.history = history
        #: The first sequence number this node's history is whole from:
        #: a SINCE before it is HISTORY_GONE, whatever the room.
        self.knownFrom = 1
        node.seq.history = self

    def after(
        self, roomKey: bytes, seen: int
    ) -> tuple[int | None, list[tuple[Event, int]]]:
        """A replay of the room after ``seen`` (History.after), gone
        before this node's history begins (as one process says of events
        it dropped)."""
        gone, held = self.history.after(roomKey, seen)
        if gone is None and split(seen)[0] + 1 < self.knownFrom:
            gone = number(held[0][0].seq if held else self.knownFrom)
        return gone, held

    async def seed(self, lastId: bytes) -> None:
        """At start: the history from the stream's tail up to ``lastId``
        (bounded by --history), so it outlives a restart of this node."""
        history = self.history
        history.clear()  # the snapshot's JOINs are no events of the order
        self.knownFrom = self.seq.lastSeq + 1
        if history.limit <= 0 or lastId == b"0-0":
            return
        entries = await self.link.command(
            "XREVRANGE",
            f"{self.link.prefix}stream",
            lastId,
            "-",
            "COUNT",
            history.limit,
        )
        directory = self.hub.rooms.directory
        defaultKey = directory.defaultKey
        for first, events in _batches(entries):
            self.knownFrom = min(self.knownFrom, first)
            for event in events:
                roomKey = _roomOf(event, defaultKey)
                if roomKey is not None:
                    history.record(roomKey, event)
        for roomKey in history.roomKeys():
            if directory.get(roomKey) is None:
                history.drop(roomKey)  # the room ended since
        log.info(
            "cluster: history read back from the stream: {n} events in {r} rooms",
            n=len(history),
            r=history.rooms,
        )

    async def seedRoom(self, roomKey: bytes, cursor: bytes) -> None:
        """This node reads the room's stream from ``cursor`` on: its
        messages up to there (bounded by --history) join the room's events
        this node read on the cluster's stream, in number order."""
        history = self.history
        if history.limit <= 0 or cursor == b"0-0":
            return
        entries = await self.link.command(
            "XREVRANGE",
            f"{self.link.prefix}roomstream:".encode() + roomKey,
            cursor,
            "-",
            "COUNT",
            history.limit,
        )
        merged = {event.seq: event for event, _ in history.after(roomKey, 0)[1]}
        gone = history.gone(roomKey)
        batches = _batches(entries)
        if len(batches) >= history.limit:  # older messages not read: gone
            gone = max(gone, batches[0][0] - 1)
        for _, events in batches:
            merged.update((event.seq, event) for event in events)
        history.drop(roomKey)
        for seq in sorted(merged):
            if seq > gone:
                history.record(roomKey, merged[seq])
        history.forgot(roomKey, gone)

    def restarted(self) -> None:
        """The stream is read anew from its start (Redis lost its state)."""
        self.history.clear()
        self.knownFrom = 1

    def gap(self, first: int) -> None:
        """Events before ``first`` were lost to this node (a gap in the
        sequence): its history is whole only from there."""
        self.history.clear()
        self.knownFrom = first


def _batches(entries: list[Any] | None) -> list[tuple[int, list[Event]]]:
    """XREVRANGE's entries as (first number, events numbered), oldest
    first; bad ones left out."""
    batches: list[tuple[int, list[Event]]] = []
    for _entryId, fields in reversed(entries or []):
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        try:
            first = int(values[b"s"])
            events = decodeBatch(values[b"b"])
        except (KeyError, ValueError, BadEvent):
            continue
        for i, event in enumerate(events):
            event.seq = first + i
        batches.append((first, events))
    return batches


def _roomOf(event: Event, defaultKey: bytes) -> bytes | None:
    """The room whose history ``event`` belongs to, as roomcast records
    it (the ROOM_LEAVEs a server LEAVE implies are not read back)."""
    if event.room is not None:
        return None if type(event) is RoomLock else key(event.room)
    if event.target is None and type(event) is not Notice:
        return defaultKey
    return None
