"""The chatd-frame spelling of the session's outputs (PROTOCOL.md):
:data:`BINARY`, the :class:`~chatd.core.codec.IClientCodec` of TCP, TLS,
unix sockets and the WebSocket (chatd.server.binary is the input half)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import implementer

from chatd.core.codec import IClientCodec
from chatd.wire import HEADER, FrameType, encode, error_frame, packList
from chatd.wire.eventframes import frameOf

if TYPE_CHECKING:
    from chatd.core.roster import Replica, User
    from chatd.wire import ErrorCode

_PACK = HEADER.pack


@implementer(IClientCodec)
class BinaryCodec:
    """Session outputs as chatd frames.  An event is spelled once for every
    recipient (:func:`~chatd.wire.eventframes.frameOf`), WHO once per
    change of the active users."""

    name = "binary"

    def __init__(self) -> None:
        # (replica, its version, the frames): a codec may serve several
        # hubs (tests build many), so the replica is part of the key.
        self._who: tuple[object, int, list[bytes]] = (None, -1, [])

    def welcome(self, user: User) -> bytes:
        # WELCOME is name.id.color: another order than the entry's.
        return encode(FrameType.WELCOME, b"%s.%d.%d" % (user.name, user.id, user.color))

    def echo(self, payload: bytes) -> bytes:
        return _PACK(FrameType.ECHO, len(payload)) + payload

    def pong(self, payload: bytes) -> bytes:
        return _PACK(FrameType.PONG, len(payload)) + payload

    def error(self, code: ErrorCode, text: str | None) -> bytes:
        return error_frame(code, text)

    def notice(self, code: str, text: str) -> bytes:
        return encode(FrameType.NOTICE, f"{code}.{text}".encode())

    def users(self, replica: Replica) -> list[bytes]:
        cached, version, frames = self._who
        if cached is not replica or version != replica.version:
            frames = packList(FrameType.USERS, [u.entry for u in replica.active])
            self._who = (replica, replica.version, frames)
        return frames

    #: An event's chatd frames, made once per event (no call in between:
    #: every fan-out of this format calls it for every event).
    event = staticmethod(frameOf)

    def version(self, minor: int) -> bytes:
        return encode(FrameType.VERSION, b"1.%d" % minor)

    def rooms(self, listing: list[tuple[bytes, int, bytes]]) -> list[bytes]:
        entries = [b"%s.%d.%s" % entry for entry in listing]
        return packList(FrameType.ROOMS, entries)

    def members(self, users: list[User]) -> list[bytes]:
        return packList(FrameType.USERS, [u.entry for u in users])


BINARY = BinaryCodec()
