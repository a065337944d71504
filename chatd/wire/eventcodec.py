"""Events as bytes, for the links between processes (workers, Redis).

An event already carries its frame(s) for the clients, so what crosses a
link is that frame plus what the receiving side cannot read from it: the
kind, the sequence number, how many frames, and the target of a targeted
event.  Nothing is pickled: a User travels as its ``id.color.name`` entry.

    event := kind:u8 seq:u64 count:u32 targetLen:u16 target frame
    batch := (len:u32 event)*
"""

from __future__ import annotations

import struct

from chatd.core.events import (
    Event,
    Join,
    Kick,
    Leave,
    Message,
    Messages,
    Notice,
    Whisper,
)
from chatd.core.roomevents import (
    RoomEvent,
    RoomJoin,
    RoomLeave,
    RoomLock,
    RoomMessage,
    RoomTopic,
)
from chatd.core.roster import User
from chatd.core.rules import LeaveReason
from chatd.wire.codec import HEADER_SIZE, split_fields
from chatd.wire.eventframes import frameOf

_HEAD = struct.Struct("!BQIH")
_LEN = struct.Struct("!I")

_KINDS: dict[type[Event], int] = {
    Event: 0,
    Message: 1,
    Messages: 2,
    Join: 3,
    Leave: 4,
    Notice: 5,
    Whisper: 6,
    Kick: 7,
    RoomMessage: 8,
    RoomJoin: 9,
    RoomLeave: 10,
    RoomTopic: 11,
    RoomLock: 12,
}


_CLASSES = {kind: cls for cls, kind in _KINDS.items()}


class BadEvent(ValueError):
    """Bytes that are not an encoded event."""


def userFromEntry(entry: bytes) -> User:
    """``id.color.name`` back to a User."""
    try:
        uid, color, name = split_fields(entry, 3)
        return User(int(uid), int(color), name)
    except ValueError as e:
        raise BadEvent(f"bad user entry {entry[:40]!r}") from e


def encodeEvent(event: Event) -> bytes:
    target = event.target.entry if event.target is not None else b""
    kind = _KINDS[type(event)]
    head = _HEAD.pack(kind, event.seq, event.count, len(target))
    return head + target + frameOf(event)


def decodeEvent(data: bytes) -> Event:
    if len(data) < _HEAD.size:
        raise BadEvent("event too short")
    kind, seq, count, targetLen = _HEAD.unpack_from(data)
    cls = _CLASSES.get(kind)
    if cls is None:
        raise BadEvent(f"unknown event kind {kind}")
    start = _HEAD.size + targetLen
    frame = data[start:]
    # Built without the constructor: the frame is already made.
    event = cls.__new__(cls)
    Event.__init__(event, frame, count)
    event.seq = seq
    payload = frame[HEADER_SIZE:]
    if isinstance(event, Whisper | Kick):
        if not targetLen:
            raise BadEvent("a targeted event without a target")
        event.target = userFromEntry(data[_HEAD.size : start])
        if isinstance(event, Whisper):
            event.sender, event.text = _said(payload)
    elif isinstance(event, RoomLock):
        room, _, flag = frame.rpartition(b".")
        if not room or flag not in (b"0", b"1"):
            raise BadEvent(f"bad room lock {frame[:40]!r}")
        event.room, event.locked = room, flag == b"1"
    elif isinstance(event, RoomMessage | RoomJoin | RoomLeave | RoomTopic):
        _roomFields(event, payload)
    elif isinstance(event, Message):
        event.user, event.text = _said(payload)
    elif isinstance(event, Notice):
        code, _, text = payload.partition(b".")
        event.code, event.text = (
            code.decode("ascii", "replace"),
            text.decode("utf-8", "replace"),
        )
    elif isinstance(event, Join):
        event.user = userFromEntry(frame[HEADER_SIZE:])
    elif isinstance(event, Leave):
        entry, _, reason = frame[HEADER_SIZE:].rpartition(b".")
        event.user = userFromEntry(entry)
        event.reason = _reason(reason)
    return event


def _roomFields(event: RoomEvent, payload: bytes) -> None:
    """A room event's fields, read back from its frame (``room.`` first)."""
    room, dot, rest = payload.partition(b".")
    if not (room and dot):
        raise BadEvent(f"a room event without its room: {payload[:40]!r}")
    event.room = room
    if isinstance(event, RoomMessage):
        event.user, event.text = _said(rest)
    elif isinstance(event, RoomTopic):
        event.topic = rest
    elif isinstance(event, RoomJoin):
        event.user = userFromEntry(rest)
    elif isinstance(event, RoomLeave):
        entry, _, reason = rest.rpartition(b".")
        event.user = userFromEntry(entry)
        event.reason = _reason(reason)


def _said(payload: bytes) -> tuple[User, bytes]:
    """``id.color.name.text`` -> (the user, the text)."""
    fields = payload.split(b".", 3)
    if len(fields) != 4:
        raise BadEvent(f"bad message payload {payload[:40]!r}")
    return userFromEntry(b".".join(fields[:3])), fields[3]


def _reason(reason: bytes) -> LeaveReason:
    try:
        return LeaveReason(reason.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadEvent(f"bad leave reason {reason[:20]!r}") from e


def encodeBatch(events: list[Event]) -> bytes:
    """Several events as one blob (one link write, one Redis entry)."""
    parts = []
    for event in events:
        data = encodeEvent(event)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def decodeBatch(data: bytes) -> list[Event]:
    events = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _LEN.size:
            raise BadEvent("torn batch")
        (size,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        if size > len(data) - offset:
            raise BadEvent("torn batch")
        events.append(decodeEvent(data[offset : offset + size]))
        offset += size
    return events
