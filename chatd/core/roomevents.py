"""The events of protocol 1.2's rooms (docs/protocol.md, "Version 1.2").

They ride the one sequencer with every other event, so each room's events
are in one total order (a stronger order than the protocol promises: none
across rooms).  Each names its room as the room's kept spelling and is
delivered by :class:`chatd.core.roomcast.RoomCast` to the room's members
only; the 1.1 fan-out and the roster's replica pass them by (``room`` is
set).  Like every event, data only: each front end's codec spells it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core.events import Event

if TYPE_CHECKING:
    from chatd.core.roster import User
    from chatd.core.rules import LeaveReason


class RoomEvent(Event):
    """Something that happened in room ``room``."""

    __slots__ = ("room",)
    room: bytes

    def __init__(self, room: bytes) -> None:
        Event.__init__(self)
        self.room = room


class RoomMessage(RoomEvent):
    """A ROOM_SAY: ``user`` said ``text`` in ``room``."""

    __slots__ = ("user", "text")

    def __init__(self, room: bytes, user: User, text: bytes) -> None:
        # The frequent one: its bases' fields set here, no calls.
        self.seq = 0
        self.frame = None
        self.count = 1
        self.room = room
        self.user = user
        self.text = text


class RoomJoin(RoomEvent):
    """``user`` entered ``room``: from here on it gets the room's events."""

    __slots__ = ("user",)

    def __init__(self, room: bytes, user: User) -> None:
        RoomEvent.__init__(self, room)
        self.user = user


class RoomLeave(RoomEvent):
    """``user`` left ``room`` (PART, a kick, or it left the server)."""

    __slots__ = ("user", "reason")

    def __init__(self, room: bytes, user: User, reason: LeaveReason) -> None:
        RoomEvent.__init__(self, room)
        self.user = user
        self.reason = reason


class RoomTopic(RoomEvent):
    """``room``'s topic is now ``topic`` (empty: none)."""

    __slots__ = ("topic",)

    def __init__(self, room: bytes, topic: bytes) -> None:
        RoomEvent.__init__(self, room)
        self.topic = topic


class RoomLock(RoomEvent):
    """The operator locked (or unlocked) ``room``'s topic: no client sees
    it; every process's directory applies it at its place in the order."""

    __slots__ = ("locked",)

    def __init__(self, room: bytes, locked: bool) -> None:
        RoomEvent.__init__(self, room)
        self.locked = locked
