"""Broadcast: one total order of events, fanned out to this process's users.

Two jobs, kept apart behind small interfaces:

* *Sequencing* (:class:`ISequencer`) decides the one total order of MESSAGE,
  JOIN and LEAVE frames.  :class:`LocalSequencer` does it in-process; a
  cluster will plug in a shared sequencer and keep everything below.
* *Local fan-out* (:class:`FanOut`) gets sequenced frames to the
  :class:`IRecipient` s of this process.  Frames sequenced in one reactor turn
  are joined into one blob, once, and each recipient gets one ``write`` of it
  per turn.  A recipient whose transport buffer is full (the transport paused
  it, as a push producer) stops being written to; it keeps a cursor into a
  shared log of blobs instead, and a blob is dropped once the last paused
  recipient has it.  A recipient whose backlog passes ``maxBacklog`` is cut
  off, so one slow reader never holds memory without bound or slows the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from zope.interface import Interface, implementer


class IRecipient(Interface):
    """A local connection that receives broadcast frames."""

    def write(data: bytes) -> None:
        """Hand bytes to the connection's transport."""

    def transportBacklog() -> int:
        """Bytes the transport holds that the kernel has not accepted yet."""

    def slowConsumer() -> None:
        """The fan-out gave up on this recipient: send SLOW_CONSUMER and close."""


class IFanOut(Interface):
    """Where a sequencer hands each frame, in the total order."""

    def deliver(frame: bytes, joining: IRecipient | None = None) -> None:
        """Deliver ``frame``; if ``joining`` is given, it receives this frame
        (its own JOIN) and everything after, and nothing before."""


class ISequencer(Interface):
    """Decides the one total order of broadcast events."""

    def subscribe(fanout: IFanOut) -> None:
        """Deliver every sequenced frame to ``fanout``."""

    def sequence(frame: bytes, joining: IRecipient | None = None) -> None:
        """Give ``frame`` its place in the order; ``joining`` as in
        :meth:`IFanOut.deliver` (it stays local to the submitting process)."""


@implementer(ISequencer)
class LocalSequencer:
    """The order is the order of calls: right for a single process."""

    def __init__(self) -> None:
        self._fanouts: list[IFanOut] = []
        self.sequenced = 0

    def subscribe(self, fanout: IFanOut) -> None:
        self._fanouts.append(fanout)

    def sequence(self, frame: bytes, joining: IRecipient | None = None) -> None:
        self.sequenced += 1
        for fanout in self._fanouts:
            fanout.deliver(frame, joining)


class _Paused:
    """A recipient the transport paused: where it is in the log, and its queue."""

    __slots__ = ("cursor", "queued")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.queued = 0


def transportBacklog(transport: object) -> int:
    """Bytes a Twisted socket transport still holds (0 if it cannot say)."""
    try:
        return (
            len(transport.dataBuffer)  # type: ignore[attr-defined]
            - transport.offset  # type: ignore[attr-defined]
            + transport._tempDataLen  # type: ignore[attr-defined]
        )
    except AttributeError:
        return 0


@implementer(IFanOut)
class FanOut:
    """Batched delivery of sequenced frames to local recipients."""

    def __init__(self, callLater: Callable, maxBacklog: int = 1 << 20) -> None:
        self._callLater = callLater
        self.maxBacklog = maxBacklog
        self._live: dict[IRecipient, None] = {}
        self._paused: dict[IRecipient, _Paused] = {}
        self._pending: list[bytes] = []
        self._flushCall = None
        # Blobs some paused recipient still needs; _log[0] is blob number _base.
        self._log: deque[bytes] = deque()
        self._base = 0
        self._next = 0  # number of the next blob
        self.deliveries = 0
        self.bytesOut = 0
        self.slowCutoffs = 0

    # -- membership ------------------------------------------------------

    def __contains__(self, recipient: IRecipient) -> bool:
        return recipient in self._live or recipient in self._paused

    def __len__(self) -> int:
        return len(self._live) + len(self._paused)

    def remove(self, recipient: IRecipient, drain: bool = False) -> None:
        """Stop delivering to ``recipient``.

        With ``drain`` it first gets everything sequenced so far (it is leaving
        cleanly and its transport will send that before closing).
        """
        if drain:
            self.send(recipient, b"")
        elif self._pending:
            self.flush()
        self._live.pop(recipient, None)
        if self._paused.pop(recipient, None) is not None:
            self._trim()

    def removeAll(self) -> None:
        """Flush what is sequenced and forget every recipient (shutdown)."""
        for recipient in list(self._paused):
            self.send(recipient, b"")
        self.flush()
        self._live.clear()
        self._paused.clear()
        self._trim()

    # -- the data path ---------------------------------------------------

    def deliver(self, frame: bytes, joining: IRecipient | None = None) -> None:
        if joining is not None:
            # The newcomer must get nothing sequenced before its own JOIN.
            if self._pending:
                self.flush()
            self._live[joining] = None
        self._pending.append(frame)
        if self._flushCall is None:
            self._flushCall = self._callLater(0, self.flush)

    def flush(self) -> None:
        """Write what this turn sequenced: one blob, one write per recipient."""
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        blob = pending[0] if len(pending) == 1 else b"".join(pending)
        number = self._next
        self._next = number + 1
        live = self._live
        self.deliveries += len(pending) * len(live)
        self.bytesOut += len(blob) * len(live)
        # write() may pause a recipient (moving it out of _live): iterate a copy.
        for recipient in tuple(live):
            recipient.write(blob)
        if self._paused:
            self._queue(number, blob)

    def _queue(self, number: int, blob: bytes) -> None:
        """Keep ``blob`` for the paused recipients that missed it."""
        missed = [(r, p) for r, p in self._paused.items() if p.cursor <= number]
        if not missed:
            return
        if not self._log:
            self._base = number
        self._log.append(blob)
        size = len(blob)
        for recipient, state in missed:
            state.queued += size
            if state.queued + recipient.transportBacklog() > self.maxBacklog:
                self.slowCutoffs += 1
                del self._paused[recipient]
                recipient.slowConsumer()
        self._trim()

    def send(self, recipient: IRecipient, data: bytes) -> None:
        """Write ``data`` to one recipient, after everything sequenced before it.

        Used for replies (ECHO, PONG, ERROR, USERS) and whispers, so that one
        connection's frames keep their order.
        """
        if self._pending:
            self.flush()
        state = self._paused.get(recipient)
        if state is not None and state.cursor < self._next:
            # Catch the paused recipient up: its transport takes the bytes
            # (the backlog stays the same, it only moves).
            queued = list(self._log)[state.cursor - self._base :]
            queued.append(data)
            state.cursor = self._next
            state.queued = 0
            data = b"".join(queued)
            self._trim()
        if data:
            recipient.write(data)

    # -- flow control (called by the recipient, as the transport's producer) --

    def pause(self, recipient: IRecipient) -> None:
        if recipient in self._live:
            del self._live[recipient]
            self._paused[recipient] = _Paused(self._next)

    def resume(self, recipient: IRecipient) -> None:
        state = self._paused.pop(recipient, None)
        if state is None:
            return
        self._live[recipient] = None
        if state.cursor < self._next:
            data = b"".join(list(self._log)[state.cursor - self._base :])
            self._trim()
            recipient.write(data)  # may pause it again; that is fine
        else:
            self._trim()

    def backlog(self, recipient: IRecipient) -> int:
        """Bytes held for ``recipient``: its transport's buffer plus its queue."""
        state = self._paused.get(recipient)
        queued = state.queued if state is not None else 0
        return queued + recipient.transportBacklog()

    @property
    def heldBytes(self) -> int:
        """Bytes in the shared log (for stats and memory tests)."""
        return sum(map(len, self._log))

    def _trim(self) -> None:
        """Drop the blobs every paused recipient already has."""
        if not self._paused:
            self._log.clear()
            self._base = self._next
            return
        oldest = min(p.cursor for p in self._paused.values())
        while self._log and self._base < oldest:
            self._log.popleft()
            self._base += 1
        if not self._log:
            self._base = self._next
