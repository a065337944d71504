"""Events as chatd frames: the binary spelling of each core event.

:func:`frameOf` is what every chatd-frame recipient of an event gets (the
fan-out of the binary front end, the links between processes): made once
per event, kept in ``event.frame``.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.core.events import (
    Event,
    Join,
    Kick,
    Leave,
    Message,
    Notice,
    Whisper,
)
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomLock, RoomMessage, RoomTopic
from chatd.wire.codec import HEADER, FrameType, encode

_PACK = HEADER.pack
_MESSAGE = FrameType.MESSAGE
_ROOM_MESSAGE = FrameType.ROOM_MESSAGE


def _message(e: Message) -> bytes:
    prefix, text = e.user.prefix, e.text
    return _PACK(_MESSAGE, len(prefix) + len(text)) + prefix + text


def _roomMessage(e: RoomMessage) -> bytes:
    room, prefix, text = e.room, e.user.prefix, e.text
    size = len(room) + 1 + len(prefix) + len(text)
    return _PACK(_ROOM_MESSAGE, size) + room + b"." + prefix + text


_SPELL: dict[type, Callable] = {
    Message: _message,
    Join: lambda e: encode(FrameType.JOIN, e.user.entry),
    Leave: lambda e: encode(
        FrameType.LEAVE, e.user.entry + b"." + e.reason.value.encode()
    ),
    Notice: lambda e: encode(FrameType.NOTICE, f"{e.code}.{e.text}".encode()),
    Whisper: lambda e: encode(FrameType.WHISPERED, e.sender.prefix + e.text),
    Kick: lambda e: b"",
    RoomMessage: _roomMessage,
    RoomJoin: lambda e: encode(FrameType.ROOM_JOIN, e.room + b"." + e.user.entry),
    RoomLeave: lambda e: encode(
        FrameType.ROOM_LEAVE,
        e.room + b"." + e.user.entry + b"." + e.reason.value.encode(),
    ),
    RoomTopic: lambda e: encode(FrameType.ROOM_TOPIC, e.room + b"." + e.topic),
    # Never sent to a client (the room cast applies it): only its room and
    # flag, for the links between processes.
    RoomLock: lambda e: e.room + (b".1" if e.locked else b".0"),
}


def frameOf(event: Event) -> bytes:
    """``event`` as chatd frames (made on first use, then kept)."""
    frame = event.frame
    if frame is None:
        frame = event.frame = _SPELL[type(event)](event)
    return frame
