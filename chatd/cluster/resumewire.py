"""The payloads of the resume messages between main and a worker.

Pure bytes in, bytes out, like :mod:`chatd.cluster.link`: numbers in
network order, events as :mod:`chatd.wire.eventcodec` bytes, nothing
pickled.  A token never crosses the link, only its digest
(:func:`chatd.core.tokens.digest`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from chatd.cluster.link import U32, U64, LinkError
from chatd.wire.eventcodec import decodeEvent, encodeEvent

if TYPE_CHECKING:
    from chatd.core.events import Event
    from chatd.core.resumes import Last, Replay

_KEY = struct.Struct("!H")
_ITEM = struct.Struct("!III")  # first frame, frame after the last, event bytes
_ROOM = struct.Struct("!QI")  # gone (0: none), events held
_ASK = struct.Struct("!IBQ")  # count, has before, before
#: RESUME's answer: resumed (the user's entry follows) or refused.
RESUMED, REFUSED = 1, 0


class _Reader:
    """Reads a payload front to back; short is a LinkError."""

    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data = data
        self.at = at

    def take(self, form: struct.Struct) -> tuple[int, ...]:
        if len(self.data) < self.at + form.size:
            raise LinkError("short resume message")
        values = form.unpack_from(self.data, self.at)
        self.at += form.size
        return values

    def read(self, n: int) -> bytes:
        if len(self.data) < self.at + n:
            raise LinkError("short resume message")
        self.at += n
        return self.data[self.at - n : self.at]

    def key(self) -> bytes:
        (n,) = self.take(_KEY)
        return self.read(n)

    def more(self) -> bool:
        return self.at < len(self.data)


def _key(roomKey: bytes) -> bytes:
    return _KEY.pack(len(roomKey)) + roomKey


def _item(event: Event, first: int, stop: int) -> bytes:
    data = encodeEvent(event)
    return _ITEM.pack(first, stop, len(data)) + data


def _readItem(reader: _Reader) -> tuple[Event, int, int]:
    first, stop, n = reader.take(_ITEM)
    return decodeEvent(reader.read(n)), first, stop


def request(req: int, body: bytes) -> bytes:
    """A question (RESUME, REPLAY, HISTORY) or its ANSWER: ``req`` first."""
    return U32.pack(req) + body


def parseRequest(payload: bytes) -> tuple[int, bytes]:
    (req,) = _Reader(payload).take(U32)
    return req, payload[U32.size :]


def sinceBody(since: dict[bytes, int]) -> bytes:
    return b"".join(_key(k) + U64.pack(n) for k, n in since.items())


def parseSince(body: bytes) -> dict[bytes, int]:
    reader, since = _Reader(body), {}
    while reader.more():
        roomKey = reader.key()
        (since[roomKey],) = reader.take(U64)
    return since


def replayBody(replay: Replay) -> bytes:
    parts = []
    for roomKey, (gone, held) in replay.items():
        parts.append(_key(roomKey) + _ROOM.pack(gone or 0, len(held)))
        parts += [_item(event, first, 0) for event, first in held]
    return b"".join(parts)


def parseReplay(body: bytes) -> Replay:
    reader, replay = _Reader(body), {}
    while reader.more():
        roomKey = reader.key()
        gone, n = reader.take(_ROOM)
        held = [_readItem(reader)[:2] for _ in range(n)]
        replay[roomKey] = (gone or None, held)
    return replay


def askBody(roomKey: bytes, count: int, before: int | None) -> bytes:
    return _ASK.pack(count, before is not None, before or 0) + roomKey


def parseAsk(body: bytes) -> tuple[bytes, int, int | None]:
    reader = _Reader(body)
    count, has, before = reader.take(_ASK)
    return body[reader.at :], count, before if has else None


def lastBody(events: Last) -> bytes:
    return b"".join(_item(event, first, stop) for event, first, stop in events)


def parseLast(body: bytes) -> Last:
    reader, events = _Reader(body), []
    while reader.more():
        events.append(_readItem(reader))
    return events
