"""The codec: the 8-byte header, frame types, error codes and text payload rules.

Everything that knows how bytes on the wire look lives here, once, for the
server, the client and the benchmark tool alike (see docs/protocol.md).
"""

from __future__ import annotations

import enum
import re
import struct

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
MAX_PAYLOAD = 1016
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


class ErrorCode(enum.Enum):
    """ERROR codes, each with the text the server sends by default."""

    FRAME_TOO_LARGE = "frame payload larger than 1016 bytes"
    UNKNOWN_TYPE = "frame type not accepted from clients"
    BAD_NAME = "a name is 1 to 32 ASCII letters, digits, _ or -"
    NAME_TAKEN = "that name is in use"
    AUTH_FAILED = "wrong or missing password"
    NOT_READY = "finish the handshake (HELLO, READY) first"
    BAD_STATE = "not allowed in this connection state"
    BAD_TEXT = "text must be 1 line of valid UTF-8 without control characters"
    TOO_LONG = "text too long"
    NO_SUCH_USER = "no active user by that name"
    RATE_LIMITED = "too many messages; slow down"
    SERVER_FULL = "server is full"
    MAINTENANCE = "server is in maintenance; try again later"
    SLOW_CONSUMER = "you did not read fast enough"
    IDLE_TIMEOUT = "nothing received for too long"
    HANDSHAKE_TIMEOUT = "handshake not completed in time"
    SHUTDOWN = "server is shutting down"
    KICKED = "removed by an operator"
    UNAVAILABLE = "the chat backend is unreachable; not delivered, try again"
    # Protocol 1.2: only for connections that sent VERSION.
    BAD_ROOM = "a room name is 1 to 32 ASCII letters, digits, _ or -"
    NO_SUCH_ROOM = "no such room"
    NOT_IN_ROOM = "you are not in that room"
    TOO_MANY_ROOMS = "too many rooms"
    TOPIC_LOCKED = "the topic of that room is locked"

    @property
    def fatal(self) -> bool:
        """Whether the server closes the connection right after this error."""
        return self in FATAL_ERRORS


FATAL_ERRORS = frozenset(
    {
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.AUTH_FAILED,
        ErrorCode.SERVER_FULL,
        ErrorCode.MAINTENANCE,
        ErrorCode.SLOW_CONSUMER,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.HANDSHAKE_TIMEOUT,
        ErrorCode.SHUTDOWN,
        ErrorCode.KICKED,
    }
)


class LeaveReason(enum.Enum):
    QUIT = "quit"
    TIMEOUT = "timeout"
    ERROR = "error"
    SLOW = "slow"
    SHUTDOWN = "shutdown"
    KICKED = "kicked"
    #: 1.2: ROOM_LEAVE of a user who left one room (PART).
    PART = "part"


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


_NAME = re.compile(rb"[A-Za-z0-9_-]{1,32}\Z")
#: C0 controls but TAB, DEL, C1 controls, line/paragraph separators, bidi controls.
_FORBIDDEN_TEXT = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
#: The ASCII bytes text may hold: TAB and the printable range.
_PLAIN_ASCII = bytes([9, *range(32, 127)])


#: For each payload size, how many bytes of a SAY header are not plain-ASCII
#: text bytes: what :func:`plainTexts` discounts.
SAY_HEADER_NOISE = tuple(
    len(HEADER.pack(FrameType.SAY, n).translate(None, _PLAIN_ASCII))
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
    return len(frames.translate(None, _PLAIN_ASCII)) == noise


#: The longest text of a NOTICE: ``MAINTENANCE.`` is the longest code we send.
MAX_NOTICE_TEXT = MAX_PAYLOAD - len("MAINTENANCE.")


def noticeText(text: str) -> bool:
    """Whether an operator's notice text can go to every user as it is."""
    data = text.encode("utf-8")
    return len(data) <= MAX_NOTICE_TEXT and valid_text(data)


def valid_name(name: bytes) -> bool:
    """1 to 32 ASCII letters, digits, ``_`` and ``-``."""
    return _NAME.match(name) is not None


def valid_text(text: bytes) -> bool:
    """Strict UTF-8, at least one byte, one line, nothing that steers a terminal.

    Python's strict UTF-8 decoder already refuses overlongs, surrogates and
    code points above U+10FFFF (RFC 3629).  Pure ASCII, the common case, is
    checked on the bytes without decoding.
    """
    if not text:
        return False
    if not text.translate(None, _PLAIN_ASCII):  # all plain ASCII: one C call
        return True
    if text.isascii():
        return False  # an ASCII control character
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _FORBIDDEN_TEXT.search(decoded) is None
