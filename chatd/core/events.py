"""Events: what the sequencer orders and the fan-out delivers.

Each event is a value that carries its sequence number once sequenced and
its frame for the binary codec, encoded once when the event is made and
shared by every recipient (and every front end: the WebSocket carries the
same frames).  *Broadcast* events (JOIN, LEAVE, MESSAGE, a run of MESSAGEs,
NOTICE) go to every active user in the one total order; *targeted* events
(a whisper, a kick) go to one user wherever that user is connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.wire import HEADER, FrameType, LeaveReason, encode, join_fields

if TYPE_CHECKING:
    from chatd.core.roster import User

_PACK = HEADER.pack
_MESSAGE = FrameType.MESSAGE


class Event:
    """Something sequenced.  ``frame`` holds ``count`` whole frames."""

    __slots__ = ("seq", "frame", "count")
    #: The user a targeted event is for; None for a broadcast.
    target: User | None = None  # a slot in targeted events
    #: The 1.2 room of a room event (chatd.core.roomevents); None for the
    #: default room's (1.1's) events.
    room: bytes | None = None  # a slot in room events

    def __init__(self, frame: bytes, count: int = 1) -> None:
        self.seq = 0
        self.frame = frame
        self.count = count

    def __repr__(self) -> str:
        return f"<{type(self).__name__} seq={self.seq} frames={self.count}>"


class Message(Event):
    """A SAY, as the MESSAGE every active user gets."""

    __slots__ = ()

    def __init__(self, user: User, text: bytes) -> None:
        prefix = user.prefix
        self.seq = 0
        self.frame = _PACK(_MESSAGE, len(prefix) + len(text)) + prefix + text
        self.count = 1


class Messages(Event):
    """A run of MESSAGE frames from one read, sequenced as one event."""

    __slots__ = ()


class Join(Event):
    """``user`` became active: from here on it receives every broadcast."""

    __slots__ = ("user",)

    def __init__(self, user: User) -> None:
        Event.__init__(self, encode(FrameType.JOIN, user.entry))
        self.user = user


class Leave(Event):
    """``user`` left the room for ``reason``."""

    __slots__ = ("user", "reason")

    def __init__(self, user: User, reason: LeaveReason) -> None:
        Event.__init__(
            self, encode(FrameType.LEAVE, join_fields(user.entry, reason.value))
        )
        self.user = user
        self.reason = reason


class Notice(Event):
    """A NOTICE ``code.text`` for every active user (maintenance, resumed)."""

    __slots__ = ()

    def __init__(self, code: str, text: str) -> None:
        Event.__init__(self, encode(FrameType.NOTICE, f"{code}.{text}".encode()))


class Whisper(Event):
    """A WHISPERED frame for ``target`` only: not part of the broadcast order."""

    __slots__ = ("target",)

    def __init__(self, sender: User, target: User, text: bytes) -> None:
        Event.__init__(self, encode(FrameType.WHISPERED, sender.prefix + text))
        self.target = target


class Kick(Event):
    """An operator removes ``target``: its session gets ERROR KICKED."""

    __slots__ = ("target",)

    def __init__(self, target: User) -> None:
        Event.__init__(self, b"", 0)
        self.target = target
