"""The protocol's words, below every wire format: error codes, leave
reasons, and what a name and a text may be (docs/protocol.md).

The session engine (chatd.core) speaks these and no frame; each front end
spells them its own way (chatd.wire for chatd frames, chatd.irc for IRC).
``MAX_PAYLOAD`` is here because every text limit derives from it: a
message must fit the frame that carries it, whichever front end sent it.
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "MAX_PAYLOAD",
    "ErrorCode",
    "FATAL_ERRORS",
    "LeaveReason",
    "valid_name",
    "valid_text",
    "PLAIN_ASCII",
]

#: Most payload bytes a chatd frame carries.
MAX_PAYLOAD = 1016


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
    # 1.2, history and resume
    BAD_TOKEN = "that token resumes nothing"
    HISTORY_GONE = "history no longer reaches back that far"

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


_NAME = re.compile(rb"[A-Za-z0-9_-]{1,32}\Z")
#: C0 controls but TAB, DEL, C1 controls, line/paragraph separators, bidi controls.
_FORBIDDEN_TEXT = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
#: The ASCII bytes text may hold: TAB and the printable range.
PLAIN_ASCII = bytes([9, *range(32, 127)])


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
    if not text.translate(None, PLAIN_ASCII):  # all plain ASCII: one C call
        return True
    if text.isascii():
        return False  # an ASCII control character
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _FORBIDDEN_TEXT.search(decoded) is None
