"""Pipe mode's input: numbered lines, paced out, stdin held back while far behind.

With stdin not a terminal every input line is a SAY.  :class:`PipeInput`
numbers the lines (a blank one counts but is not sent), hands them to the
:class:`~chatd.client.pacing.Pacer`, stops reading stdin while too many wait
(``tail -f`` of a busy file must not fill memory) and reports each line not
sent by its number, so a script's author can find it.  The Session decides
when the connection is there; this decides nothing about the connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatd.client.inflight import SAY_REFUSALS
from chatd.client.pacing import Pacer

if TYPE_CHECKING:
    from chatd.client.console import Console

#: Stop reading stdin with this many lines waiting, and read on once the
#: backlog is down to INPUT_LOW.
INPUT_HIGH = 1000
INPUT_LOW = 100


class PipeInput:
    """The input lines of a script, from stdin to delivered or refused."""

    def __init__(
        self,
        clock: Any,
        send: Callable[[str], None],
        check: Callable[[str], tuple[str, str] | None],
        console: Console,
    ) -> None:
        self.console = console
        self.pacer = Pacer(clock, send, self._failed, check, warn=console.warn)
        self.lineno = 0
        self.paused = False

    @property
    def idle(self) -> bool:
        """Every line so far was delivered or refused."""
        return self.pacer.idle

    @property
    def failed(self) -> int:
        return self.pacer.failed

    def line(self, text: str) -> None:
        self.lineno += 1
        if text:
            self.pacer.add(self.lineno, text)
            self._flow()

    def start(self) -> None:
        """The connection is ACTIVE (again): send."""
        self.pacer.start()
        self._flow()

    def stop(self) -> None:
        """The connection is gone: what was in flight is sent again on the next."""
        self.pacer.stop()

    def acked(self) -> None:
        """Our own MESSAGE copy: the oldest line in flight was delivered."""
        self.pacer.acked()
        self._flow()

    def refused(self, code: str, text: str) -> bool:
        """An ERROR that may answer the oldest line in flight; True if it did."""
        if code in SAY_REFUSALS and self.pacer.inFlight:
            self.pacer.refused(code, text)
            self._flow()
            return True
        return False

    def abandon(self, why: str) -> None:
        """The session ends: report every line not yet sent, and ``why``."""
        numbers = [n for n, _ in self.pacer.abandon()]
        if len(numbers) == 1:
            self.console.warn(f"line {numbers[0]} not sent: {why}")
        elif numbers:
            self.console.warn(
                f"{len(numbers)} lines not sent (lines {numbers[0]} to "
                f"{numbers[-1]}): {why}"
            )

    def _flow(self) -> None:
        """Read stdin only while the backlog of lines is not too long."""
        backlog = self.pacer.backlog
        if not self.paused and backlog >= INPUT_HIGH:
            self.paused = True
            self.console.pauseInput()
        elif self.paused and backlog <= INPUT_LOW:
            self.paused = False
            self.console.resumeInput()

    def _failed(self, lineno: int, code: str, reason: str) -> None:
        self.console.warn(f"line {lineno} not sent: {code} ({reason})")
