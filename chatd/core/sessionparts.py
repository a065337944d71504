"""What the parts of a session call of the whole, declared once.

:class:`chatd.core.session.Session` is split into mixins for the size of a
module (Output, Handshake, RoomRequests, Resuming): each part calls
methods that another part, or Session itself, defines.  This base names
them with their signatures, so the type checker checks those calls; at
run time it is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from chatd.core.rules import ErrorCode, LeaveReason


class SessionParts:
    """The base of every part of a Session; nothing at run time."""

    if TYPE_CHECKING:

        def error(self, code: ErrorCode, text: str | None = None) -> None: ...
        def reply(self, frames: bytes, count: int = 1) -> None: ...
        def close(self, reason: LeaveReason, error: ErrorCode | None = None,
                  text: str | None = None, drain: bool = True) -> None: ...  # fmt: skip
        def setTimeout(self, period: float | None) -> Any: ...
        def _flushBatch(self) -> None: ...
        def _active(self) -> bool: ...
        def _unavailable(self, failure: Failure) -> None: ...
