"""Events: what the sequencer orders and the fan-out delivers.

An event is data (who, what, why) and its sequence number once
sequenced.  It knows no wire format: each front end's codec spells it
(:meth:`chatd.core.codec.IClientCodec.event`), once per event for all the
recipients of that format, and keeps the chatd-frame spelling in
``frame`` (filled on first use by chatd.wire.eventframes, or given: a run
of SAYs a binary client sent, an event read from another process).
*Broadcast* events (JOIN, LEAVE, MESSAGE, a run of MESSAGEs, NOTICE) go to
every active user in the one total order; *targeted* events (a whisper, a
kick) go to one user wherever that user is connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatd.core.roster import User
    from chatd.core.rules import LeaveReason


class Event:
    """Something sequenced; ``count`` is how many frames it spells as."""

    __slots__ = ("seq", "frame", "count")
    #: The user a targeted event is for; None for a broadcast.
    target: User | None = None  # a slot in targeted events
    #: The 1.2 room of a room event (chatd.core.roomevents); None for the
    #: default room's (1.1's) events.
    room: bytes | None = None  # a slot in room events

    def __init__(self, frame: bytes | None = None, count: int = 1) -> None:
        self.seq = 0
        self.frame = frame
        self.count = count

    def __repr__(self) -> str:
        return f"<{type(self).__name__} seq={self.seq} frames={self.count}>"


class Message(Event):
    """A SAY: ``user`` said ``text`` to the default room."""

    __slots__ = ("user", "text")

    def __init__(self, user: User, text: bytes) -> None:
        self.seq = 0
        self.frame = None
        self.count = 1
        self.user = user
        self.text = text


class Messages(Event):
    """A run of SAYs from one read of a binary client, already spelled as
    ``count`` MESSAGE frames (the bulk path), sequenced as one event."""

    __slots__ = ()


class Join(Event):
    """``user`` became active: from here on it receives every broadcast."""

    __slots__ = ("user",)

    def __init__(self, user: User) -> None:
        Event.__init__(self)
        self.user = user


class Leave(Event):
    """``user`` left for ``reason``."""

    __slots__ = ("user", "reason")

    def __init__(self, user: User, reason: LeaveReason) -> None:
        Event.__init__(self)
        self.user = user
        self.reason = reason


class Notice(Event):
    """A NOTICE ``code.text`` for every active user (maintenance, resumed)."""

    __slots__ = ("code", "text")

    def __init__(self, code: str, text: str) -> None:
        Event.__init__(self)
        self.code = code
        self.text = text


class Whisper(Event):
    """``sender`` whispered ``text`` to ``target`` only: not part of the
    broadcast order."""

    __slots__ = ("target", "sender", "text")

    def __init__(self, sender: User, target: User, text: bytes) -> None:
        Event.__init__(self)
        self.sender = sender
        self.target = target
        self.text = text


class Kick(Event):
    """An operator removes ``target``: its session gets ERROR KICKED."""

    __slots__ = ("target",)

    def __init__(self, target: User) -> None:
        Event.__init__(self, b"", 0)
        self.target = target
