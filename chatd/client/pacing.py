"""Pipe mode's sender: every input line delivered once, in order, at the server's pace.

A script may write lines faster than the server accepts them (a server may
limit each user's rate, PROTOCOL.md 1.1, and chatd does by default).  The
:class:`Pacer` keeps at most ``window`` SAYs unacknowledged (the sender's own
MESSAGE copy is the acknowledgement; replies come in request order, so the
oldest SAY in flight is the one a reply answers).  A SAY refused with
``RATE_LIMITED`` or ``UNAVAILABLE`` is sent again after a back-off, before
any later line; from then on one SAY is in flight at a time, spaced by a gap
that grows on each refusal and shrinks on each success, so the client
settles near the server's rate instead of hammering it.  Any other refusal
is reported with the input line number and counted as a failure.

Pure apart from the clock (``callLater``/``seconds``), so unit tests drive
it with ``task.Clock``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from typing import Any

#: SAYs in flight before the server has shown that it limits our rate.
WINDOW = 8
#: Spacing of SAYs after the first RATE_LIMITED: starts here, doubles on a
#: refusal (at most MAX_GAP), shrinks by GAP_DECAY on each success.
MIN_GAP = 0.05
MAX_GAP = 5.0
GAP_DECAY = 0.9
#: Refusals that mean "not now": the line is sent again later.
RETRY_CODES = frozenset({"RATE_LIMITED", "UNAVAILABLE"})

Line = tuple[int, str]


class Pacer:
    """Send numbered lines through ``send``; report each that fails.

    ``send(text)`` puts one SAY on the wire; ``check(text)`` says why the
    server would refuse ``text`` (``(code, reason)``) or None;
    ``report(lineno, code, reason)`` is told of each line not delivered.
    """

    def __init__(
        self,
        clock: Any,
        send: Callable[[str], None],
        report: Callable[[int, str, str], None],
        check: Callable[[str], tuple[str, str] | None] = lambda text: None,
        window: int = WINDOW,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.clock = clock
        self._send = send
        self._report = report
        self._check = check
        self._warn = warn
        self.maxWindow = window
        self.window = window
        self.gap = 0.0
        self.queue: deque[Line] = deque()
        self.inFlight: deque[Line] = deque()
        self.retry: list[Line] = []  # refused "not now", in order: before the queue
        #: In flight when the connection went: delivered or not, we cannot
        #: tell until a resume's replay brings our own copies back (each
        #: confirms the oldest); what is left is sent again at the start.
        self.unsure: deque[Line] = deque()
        self.running = False
        self.delivered = 0
        self.failed = 0
        self._nextSend = 0.0
        self._timer: Any = None
        self._sent = 0  # SAYs sent, to tell a fresh refusal from stale ones
        self._lastRefusedBefore = -1
        self._serial: deque[int] = deque()  # send serials of inFlight

    # -- state -----------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Lines not yet acknowledged or failed."""
        return len(self.queue) + len(self.inFlight) + len(self.retry) + len(self.unsure)

    @property
    def idle(self) -> bool:
        return self.backlog == 0

    def add(self, lineno: int, text: str) -> None:
        self.queue.append((lineno, text))
        self._pump()

    def start(self) -> None:
        """The connection is ACTIVE (again): a fresh rate allowance."""
        self.running = True
        if self.unsure:  # not confirmed by a replay: not delivered
            self.retry = sorted([*self.retry, *self.unsure], key=lambda e: e[0])
            self.unsure.clear()
        self.window = self.maxWindow
        self.gap = 0.0
        self._pump()

    def stop(self) -> None:
        """The connection is gone: what was in flight is unsure, sent again
        on the next connection unless a resume's replay confirms it."""
        self.running = False
        self._cancel()
        self.unsure.extend(self.inFlight)
        self.inFlight.clear()
        self._serial.clear()

    def abandon(self) -> list[Line]:
        """Give up on everything not delivered (the session is ending)."""
        self.stop()
        lost = sorted([*self.retry, *self.unsure], key=lambda e: e[0]) + [*self.queue]
        self.retry.clear()
        self.unsure.clear()
        self.queue.clear()
        self.failed += len(lost)
        return lost

    # -- replies ---------------------------------------------------------

    def acked(self) -> None:
        """Our own MESSAGE copy came back: the oldest SAY in flight is
        delivered (or, in a resume's replay, the oldest unsure one)."""
        if not self.inFlight:
            if self.unsure and not self.running:
                self.unsure.popleft()
                self.delivered += 1
            return
        lineno = self.inFlight.popleft()[0]
        self._serial.popleft()
        self.delivered += 1
        if self.retry and self.retry[0][0] < lineno:
            # Pipelined SAYs meet a token bucket that refilled between two of
            # them: the server took a later line after refusing an earlier
            # one.  It cannot be undone; say so rather than hide it.
            self._warn(
                f"line {lineno} was delivered before line {self.retry[0][0]} "
                "(the server accepted it while refusing the earlier one)"
            )
        if self.gap:
            self.gap = max(self.gap * GAP_DECAY, MIN_GAP)
        self._pump()

    def refused(self, code: str, reason: str) -> None:
        """An ERROR answering the oldest SAY in flight."""
        if not self.inFlight:
            return
        line = self.inFlight.popleft()
        serial = self._serial.popleft()
        if code in RETRY_CODES:
            # Kept in input order: a line refused again goes back before the
            # later lines refused with it.
            bisect.insort(self.retry, line, key=lambda entry: entry[0])
            self.window = 1
            if serial > self._lastRefusedBefore:
                # The first refusal of a SAY sent after the last one we heard
                # of: slow down.  Older SAYs in flight were refused for the
                # same reason and do not slow us down further.
                self.gap = min(max(self.gap * 2, MIN_GAP), MAX_GAP)
                self._lastRefusedBefore = self._sent
            self._nextSend = self.clock.seconds() + self.gap
        else:
            self.failed += 1
            self._report(line[0], code, reason)
        self._pump()

    # -- sending ---------------------------------------------------------

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _pump(self) -> None:
        while self.running and (self.retry or self.queue):
            if len(self.inFlight) >= self.window:
                return  # (after a refusal the window is 1: nothing overtakes it)
            wait = self._nextSend - self.clock.seconds()
            if self.gap and wait > 0:
                if self._timer is None or not self._timer.active():
                    self._timer = self.clock.callLater(wait, self._pump)
                return
            line = self.retry.pop(0) if self.retry else self.queue.popleft()
            problem = self._check(line[1])
            if problem is not None:
                self.failed += 1
                self._report(line[0], *problem)
                continue
            self.inFlight.append(line)
            self._sent += 1
            self._serial.append(self._sent)
            self._nextSend = self.clock.seconds() + self.gap
            self._send(line[1])
