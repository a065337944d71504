"""The events of protocol 1.2's rooms (docs/protocol.md, "Version 1.2").

They ride the one sequencer with every other event, so each room's events
are in one total order (a stronger order than the protocol promises: none
across rooms).  Each carries the room's name as its frame spells it and
is delivered by :class:`chatd.core.roomcast.RoomCast` to the room's
members only; the 1.1 fan-out and the roster's replica pass them by
(``room`` is set).  Each frame is encoded once, when the event is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core.events import Event
from chatd.wire import HEADER, FrameType, LeaveReason, encode, join_fields

if TYPE_CHECKING:
    from chatd.core.roster import User

_PACK = HEADER.pack


class RoomEvent(Event):
    """Something that happened in room ``room`` (its spelling in the frame)."""

    __slots__ = ("room",)


class RoomMessage(RoomEvent):
    """A ROOM_SAY, as the ROOM_MESSAGE every member gets."""

    __slots__ = ()

    def __init__(self, room: bytes, user: User, text: bytes) -> None:
        size = len(room) + 1 + len(user.prefix) + len(text)
        head = _PACK(FrameType.ROOM_MESSAGE, size)
        Event.__init__(self, head + room + b"." + user.prefix + text)
        self.room = room


class RoomJoin(RoomEvent):
    """``user`` entered ``room``: from here on it gets the room's events."""

    __slots__ = ("user",)

    def __init__(self, room: bytes, user: User) -> None:
        Event.__init__(self, encode(FrameType.ROOM_JOIN, join_fields(room, user.entry)))
        self.room = room
        self.user = user


class RoomLeave(RoomEvent):
    """``user`` left ``room`` (PART, or it left the server: the 1.1 reason)."""

    __slots__ = ("user", "reason")

    def __init__(self, room: bytes, user: User, reason: LeaveReason) -> None:
        payload = join_fields(room, user.entry, reason.value)
        Event.__init__(self, encode(FrameType.ROOM_LEAVE, payload))
        self.room = room
        self.user = user
        self.reason = reason


class RoomTopic(RoomEvent):
    """``room``'s topic is now ``topic`` (empty: none)."""

    __slots__ = ("topic",)

    def __init__(self, room: bytes, topic: bytes) -> None:
        Event.__init__(self, encode(FrameType.ROOM_TOPIC, room + b"." + topic))
        self.room = room
        self.topic = topic
