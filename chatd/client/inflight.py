"""Terminal mode's requests in flight: which SAY or WHISPER a reply answers.

The server answers requests in the order they came (PROTOCOL.md), but a
delivered SAY is answered by our own MESSAGE copy and a delivered WHISPER by
nothing at all.  So a WHISPER is sent with a PING right behind it: its PONG,
with no ERROR before it, means the whisper arrived.  :class:`InFlight`
keeps the SAYs and WHISPERs whose reply may still come, in order, and says
which one an ERROR, a MESSAGE copy or a PONG answers.  (Pipe mode's lines are
the :class:`~chatd.client.pacing.Pacer`'s.)  Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from chatd.wire import ErrorCode


@dataclass
class SentWhisper:
    """A WHISPER awaiting the PONG of the PING sent right behind it."""

    name: str
    text: str
    token: bytes


#: Stands for a SAY sent from the terminal, in the queue of requests.
SAY = "say"
#: ERROR codes that answer a SAY (so its MESSAGE copy will not come).
SAY_REFUSALS = {"BAD_TEXT", "TOO_LONG", "RATE_LIMITED", "NOT_READY", "UNAVAILABLE"}
#: ... and those that answer a SAY or a WHISPER.
REQUEST_REFUSALS = SAY_REFUSALS | {ErrorCode.NO_SUCH_USER.name}


class InFlight:
    """The SAYs and WHISPERs sent whose reply may still come, oldest first."""

    def __init__(self) -> None:
        self._requests: deque[str | SentWhisper] = deque()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._requests)

    def said(self) -> None:
        self._requests.append(SAY)

    def whispered(self, name: str, text: str) -> SentWhisper:
        """A WHISPER is sent: its PING's token is in the answer."""
        self._tokens += 1
        sent = SentWhisper(name, text, b"w%d" % self._tokens)
        self._requests.append(sent)
        return sent

    def acked(self) -> None:
        """Our own MESSAGE copy: the oldest SAY in flight was delivered."""
        if self._requests and self._requests[0] == SAY:
            self._requests.popleft()

    def confirmed(self, token: bytes) -> SentWhisper | None:
        """The whisper whose PING came back (so it arrived), or None."""
        sent = next(
            (
                r
                for r in self._requests
                if isinstance(r, SentWhisper) and r.token == token
            ),
            None,
        )
        if sent is not None:
            self._requests.remove(sent)
        return sent

    def refused(self, code: str) -> SentWhisper | None:
        """An ERROR answered a request: forget it; the whisper it refused, or
        None (a SAY, or nothing was in flight)."""
        if not self._requests:
            return None
        request = self._requests[0]
        if code == ErrorCode.NO_SUCH_USER.name:  # only ever answers a WHISPER
            request = next(
                (r for r in self._requests if isinstance(r, SentWhisper)), request
            )
        self._requests.remove(request)
        return request if isinstance(request, SentWhisper) else None

    def lost(self) -> list[SentWhisper]:
        """The connection is gone: forget all, and say which whispers were
        not confirmed (they may not have arrived)."""
        whispers = [r for r in self._requests if isinstance(r, SentWhisper)]
        self._requests.clear()
        return whispers
