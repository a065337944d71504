"""The codec: the 8-byte header, frame types and payload layouts.

Everything that knows how bytes on the wire look lives here, once, for the
server, the client and the benchmark tool alike (see docs/protocol.md).
The protocol's words (error codes, leave reasons, the name and text rules)
are :mod:`chatd.core.rules`, re-exported here for the code that speaks
frames.
"""

from __future__ import annotations

import enum
import struct

from chatd.core.rules import (
    FATAL_ERRORS,
    MAX_PAYLOAD,
    PLAIN_ASCII,
    ErrorCode,
    LeaveReason,
    valid_name,
    valid_text,
)

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "MAX_FRAME",
    "SEP",
    "FrameType",
    "ErrorCode",
    "FATAL_ERRORS",
    "LeaveReason",
    "encode",
    "join_fields",
    "split_fields",
    "packList",
    "error_payload",
    "error_frame",
    "parse_error",
    "SAY_HEADER_NOISE",
    "plainTexts",
    "MAX_NOTICE_TEXT",
    "noticeText",
    "valid_name",
    "valid_text",
]

HEADER = struct.Struct("!II")
HEADER_SIZE = HEADER.size  # 8
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD
SEP = b"."


class FrameType(enum.IntEnum):
    ECHO = 1
    HELLO = 2
    WELCOME = 3
    READY = 4
    SAY = 5
    MESSAGE = 6
    JOIN = 7
    LEAVE = 8
    PING = 9
    PONG = 10
    ERROR = 11
    WHO = 12
    USERS = 13
    WHISPER = 14
    WHISPERED = 15
    NOTICE = 16
    BYE = 17
    # Protocol 1.2 (docs/protocol.md): only for connections that sent VERSION.
    VERSION = 18
    ENTER = 19
    PART = 20
    ROOM_SAY = 21
    ROOM_MESSAGE = 22
    ROOM_JOIN = 23
    ROOM_LEAVE = 24
    LIST = 25
    ROOMS = 26
    ROOM_WHO = 27
    TOPIC = 28
    ROOM_TOPIC = 29
    # 1.2, history and resume
    RESUMABLE = 30
    TOKEN = 31
    RESUME = 32
    SINCE = 33
    MARK = 34
    HISTORY = 35


def encode(ftype: int, payload: bytes = b"") -> bytes:
    """One frame: header and payload.  The caller keeps payloads <= 1016."""
    return HEADER.pack(ftype, len(payload)) + payload


def join_fields(*fields: bytes | str | int) -> bytes:
    """Format a text payload such as ``id.color.name.text``."""
    return SEP.join(
        f if isinstance(f, bytes) else str(f).encode("utf-8") for f in fields
    )


def split_fields(payload: bytes, count: int) -> list[bytes]:
    """Split ``a.b.rest`` into ``count`` fields, the last being the *rest*.

    Raises ValueError when the payload holds fewer fields.
    """
    fields = payload.split(SEP, count - 1)
    if len(fields) != count:
        raise ValueError(f"expected {count} fields, got {len(fields)}")
    return fields


def error_payload(code: ErrorCode, text: str | None = None) -> bytes:
    return join_fields(code.name, text or code.value)


def error_frame(code: ErrorCode, text: str | None = None) -> bytes:
    return encode(FrameType.ERROR, error_payload(code, text))


def parse_error(payload: bytes) -> tuple[str, str]:
    """``CODE.text`` -> (code, text); also used for NOTICE payloads."""
    code, _, text = payload.partition(SEP)
    return code.decode("ascii", "replace"), text.decode("utf-8", "replace")


#: For each payload size, how many bytes of a SAY header are not plain-ASCII
#: text bytes: what :func:`plainTexts` discounts.
SAY_HEADER_NOISE = tuple(
    len(HEADER.pack(FrameType.SAY, n).translate(None, PLAIN_ASCII))
    for n in range(MAX_PAYLOAD + 1)
)


def plainTexts(frames: bytes, noise: int) -> bool:
    """Whether whole SAY ``frames`` carry only plain-ASCII text (valid text
    under :func:`valid_text`), given the sum of their headers'
    :data:`SAY_HEADER_NOISE`.

    One C call for a run of frames instead of one check per frame: a header
    holds a fixed number of non-text bytes for its size, so any text byte
    outside TAB and the printable range makes the count come out larger.
    """
    return len(frames.translate(None, PLAIN_ASCII)) == noise


#: The longest text of a NOTICE: ``MAINTENANCE.`` is the longest code we send.
MAX_NOTICE_TEXT = MAX_PAYLOAD - len("MAINTENANCE.")


def noticeText(text: str) -> bool:
    """Whether an operator's notice text can go to every user as it is."""
    data = text.encode("utf-8")
    return len(data) <= MAX_NOTICE_TEXT and valid_text(data)


def packList(ftype: int, entries: list[bytes]) -> list[bytes]:
    """``entries`` as frames of ``ftype`` (USERS, 1.2's ROOMS): separated by
    newlines, packed greedily, an entry never split, an empty frame last."""
    frames = []
    chunk: list[bytes] = []
    size = 0
    for entry in entries:
        extra = len(entry) + (1 if chunk else 0)
        if chunk and size + extra > MAX_PAYLOAD:
            frames.append(encode(ftype, b"\n".join(chunk)))
            chunk, size, extra = [], 0, len(entry)
        chunk.append(entry)
        size += extra
    if chunk:
        frames.append(encode(ftype, b"\n".join(chunk)))
    frames.append(encode(ftype))
    return frames
