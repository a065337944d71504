"""The chatd-frame codec of a connection that asked for numbers.

A client that sent RESUMABLE or RESUME (docs/protocol.md, "History and
resume") gets a MARK ``room.number`` before each frame of a room's order.
:class:`NumberedCodec` is :class:`~chatd.server.binary.BinaryCodec` with
that spelling; being another format, its recipients have a fan-out of
their own (one per hub and format), so the MARKs are spelled once per
event for all of them and cost the other clients nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core.events import Notice
from chatd.core.history import number
from chatd.server.binarycodec import BinaryCodec
from chatd.wire import HEADER, FrameType, encode
from chatd.wire.eventframes import frameOf

if TYPE_CHECKING:
    from chatd.core.events import Event

_PACK = HEADER.pack
_UNPACK = HEADER.unpack_from
_SIZE = HEADER.size
_MARK = int(FrameType.MARK)


class NumberedCodec(BinaryCodec):
    """Chatd frames, each event of a room's order after its MARK."""

    name = "binary+numbers"

    def __init__(self, default: bytes) -> None:
        BinaryCodec.__init__(self)
        #: The default room's name: its events (1.1's) carry none.
        self.default = default

    def marked(
        self, event: Event, first: int = 0, room: bytes | None = None, stop: int = 0
    ) -> bytes:
        """``event``'s frames from frame ``first`` on (to ``stop``, if
        given), each after its MARK.  Once per event for all numbered
        recipients; a run of SAYs is cut into its frames in one pass."""
        head = (event.room or room or self.default) + b"."
        blob = frameOf(event)
        base = number(event.seq)
        if event.count == 1:
            payload = head + b"%d" % base
            return _PACK(_MARK, len(payload)) + payload + blob
        stop = stop or event.count
        unpack = _UNPACK
        out = []
        at = 0
        for i in range(stop):
            end = at + _SIZE + unpack(blob, at)[1]
            if i >= first:
                payload = head + b"%d" % (base + i)
                out.append(_PACK(_MARK, len(payload)) + payload)
                out.append(blob[at:end])
            at = end
        return b"".join(out)

    def event(self, event: Event) -> bytes:
        if event.target is not None or not event.seq or type(event) is Notice:
            return frameOf(event)  # a whisper, a kick, a NOTICE, a greeting
        return self.marked(event)

    def resumable(self, window: float) -> bytes:
        return encode(FrameType.RESUMABLE, b"%d" % int(window))

    def token(self, token: bytes) -> bytes:
        return encode(FrameType.TOKEN, token)

    def replay(self, room: bytes, held: list[tuple[Event, int]]) -> tuple[bytes, int]:
        """What a resume replays of ``room`` (:meth:`History.after`)."""
        parts = [self.marked(event, first, room) for event, first in held]
        count = sum(event.count - first for event, first in held)
        return b"".join(parts), count * 2

    def history(
        self, room: bytes, held: list[tuple[Event, int, int]]
    ) -> tuple[bytes, int]:
        """HISTORY's answer (:meth:`History.last`): its header, then the
        frames, marked."""
        count = sum(stop - first for _, first, stop in held)
        head = encode(FrameType.HISTORY, b"%s.%d" % (room, count))
        body = b"".join(
            self.marked(event, first, room, stop) for event, first, stop in held
        )
        return head + body, 1 + 2 * count


#: Numbered codecs by default room name (one per hub in practice).
_CODECS: dict[bytes, NumberedCodec] = {}


def numberedCodec(default: bytes) -> NumberedCodec:
    codec = _CODECS.get(default)
    if codec is None:
        codec = _CODECS[default] = NumberedCodec(default)
    return codec
