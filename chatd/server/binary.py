"""The binary front end's codec: chatd frames to session inputs and
session outputs to chatd frames (PROTOCOL.md), for TCP, TLS, unix sockets
and the WebSocket alike.

:func:`dispatch` is the input half: one frame becomes one call of the
session's semantic inputs (:class:`chatd.core.session.Session`), with the
payload split as the frame table says.  :data:`BINARY` is the output half,
the :class:`~chatd.core.codec.IClientCodec` that spells what the session
answers (chatd.server.binarycodec; chatd.server.numbered for a client
that asked for numbers).  The rules (state, precedence, limits) stay in the session, so a
front end with another wire format drives the same rules.
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.core.codec import IClientCodec
from chatd.core.session import Session
from chatd.server.binarycodec import BINARY, BinaryCodec
from chatd.server.numbered import numberedCodec
from chatd.wire import FrameType

__all__ = ["BINARY", "INPUTS", "BinaryCodec", "dispatch", "unknown"]


def _hello(session: Session, payload: bytes) -> None:
    name, dot, password = payload.partition(b".")
    session.hello(name, password if dot else None)


def _whisper(session: Session, payload: bytes) -> None:
    name, dot, text = payload.partition(b".")
    session.whisper(name, text if dot else None)


def _version(session: Session, payload: bytes) -> None:
    """VERSION ``1.N``, N >= 2 with no leading zeros; anything else is the
    UNKNOWN_TYPE a 1.1 server gives it."""
    major, dot, minor = payload.partition(b".")
    if (
        major == b"1"
        and dot
        and 0 < len(minor) < 10
        and minor.isdigit()
        and minor[:1] != b"0"
        and int(minor) >= 2
    ):
        session.version(2)
    else:
        unknown(session, FrameType.VERSION)


def _split(method: Callable[..., None]) -> Callable:
    """A 1.2 request whose payload is ``room.rest`` (rest None: no dot)."""

    def request(session: Session, payload: bytes, *more: object) -> None:
        room, dot, rest = payload.partition(b".")
        method(session, room, rest if dot else None, *more)

    return request


#: 1.2 requests: only for a connection that sent VERSION; before, as 1.1,
#: UNKNOWN_TYPE.
ROOM_INPUTS: dict[int, Callable[[Session, bytes], None]] = {
    FrameType.ENTER: Session.enter,
    FrameType.PART: Session.part,
    FrameType.ROOM_SAY: _split(Session.roomSay),
    FrameType.LIST: lambda s, p: s.listRooms(),
    FrameType.ROOM_WHO: Session.roomWho,
    FrameType.TOPIC: _split(Session.topic),
    # history and resume
    FrameType.RESUMABLE: lambda s, p: s.resumable(_numbers(s)),
    FrameType.RESUME: lambda s, p: s.resume(p, _numbers(s)),
    FrameType.SINCE: _split(Session.since),
    FrameType.HISTORY: lambda s, p: _split(Session.history)(s, p, _numbers(s)),
}


def _numbers(session: Session) -> IClientCodec:
    """The numbered spelling of chatd frames for ``session``'s hub."""
    return numberedCodec(session.hub.rooms.directory.default.name)


def _roomSay(session: Session, payload: bytes) -> None:
    """ROOM_SAY, the frequent 1.2 request: gated and split in one call."""
    if session.speaks12:
        room, dot, text = payload.partition(b".")
        session.roomSay(room, text if dot else None)
    else:
        unknown(session, FrameType.ROOM_SAY)


def _room(ftype: int) -> Callable[[Session, bytes], None]:
    handler = ROOM_INPUTS[ftype]

    def gated(session: Session, payload: bytes) -> None:
        if session.speaks12:
            handler(session, payload)
        else:
            unknown(session, ftype)

    return gated


#: Frame type -> input.  The frequent ones are the session's own methods
#: (one call per frame, no adapter in between).
INPUTS: dict[int, Callable[[Session, bytes], None]] = {
    FrameType.ECHO: Session.echo,
    FrameType.HELLO: _hello,
    FrameType.READY: lambda s, p: s.ready(),
    FrameType.SAY: Session.say,
    FrameType.PING: Session.ping,
    FrameType.PONG: lambda s, p: s.pong(),
    FrameType.WHO: lambda s, p: s.who(),
    FrameType.WHISPER: _whisper,
    FrameType.BYE: lambda s, p: s.bye(),
    FrameType.VERSION: _version,
    **{ftype: _room(ftype) for ftype in ROOM_INPUTS},
    FrameType.ROOM_SAY: _roomSay,
}


def dispatch(session: Session, ftype: int, payload: bytes) -> None:
    """Hand one frame from the client to ``session`` (the binary front end
    inlines this: one call fewer per frame)."""
    handler = INPUTS.get(ftype)
    if handler is None:
        unknown(session, ftype)
    else:
        handler(session, payload)


def unknown(session: Session, ftype: int) -> None:
    session.unknown(f"type {ftype} not accepted from clients")
