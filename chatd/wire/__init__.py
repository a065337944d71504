"""chatd's wire format (docs/protocol.md), shared by server, client and bench.

:mod:`chatd.wire.codec` says how frames and their payloads look;
:mod:`chatd.wire.framer` cuts a byte stream into frames.
"""

from chatd.wire.codec import (
    FATAL_ERRORS,
    HEADER,
    HEADER_SIZE,
    MAX_FRAME,
    MAX_NOTICE_TEXT,
    MAX_PAYLOAD,
    SAY_HEADER_NOISE,
    SEP,
    ErrorCode,
    FrameType,
    LeaveReason,
    encode,
    error_frame,
    error_payload,
    join_fields,
    noticeText,
    parse_error,
    plainTexts,
    split_fields,
    valid_name,
    valid_text,
)
from chatd.wire.framer import FrameReceiver

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
    "FrameReceiver",
]
