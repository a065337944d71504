"""Fan-out: sequenced events to this process's users, batched, bounded.

:class:`FanOut` is an :class:`~chatd.core.sequencer.IEventSink`: it gets
every event in the total order and hands its frames to the
:class:`IRecipient` s (sessions) of this process.  Frames sequenced in one reactor turn
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
from itertools import islice

from zope.interface import Attribute, Interface, implementer

from chatd.core.events import Event, Join
from chatd.core.sequencer import IEventSink


class IRecipient(Interface):
    """A local user that receives broadcast frames (a session)."""

    user = Attribute("The User this recipient is, for targeted events.")

    def write(data: bytes) -> None:
        """Hand whole frames to the user's connection.

        The fan-out looks this up once, when the recipient goes live (and
        again on :meth:`FanOut.resume`), and calls what it found every turn:
        a recipient that changes its ``write`` while live says so with
        :meth:`FanOut.rebind`."""

    def backlog() -> int:
        """Bytes its front end holds that the peer has not taken yet."""

    def slowConsumer() -> None:
        """The fan-out gave up on this recipient: send SLOW_CONSUMER and close."""

    def targeted(event: Event) -> None:
        """An event for this user only: a whisper, a kick."""


class _Paused:
    """A recipient the transport paused: where it is in the log, and its queue.

    It needs blob number ``cursor`` onwards, less the first ``skip`` bytes of
    that blob (which it was given before the blob was complete).
    """

    __slots__ = ("cursor", "skip", "queued")

    def __init__(self, cursor: int, skip: int = 0) -> None:
        self.cursor = cursor
        self.skip = skip
        self.queued = 0


def _frameCount(multi: dict[int, int], elements: int) -> int:
    """Frames in the first ``elements`` of a turn's pending list."""
    return elements + sum(n - 1 for i, n in multi.items() if i < elements)


@implementer(IEventSink)
class FanOut:
    """Batched delivery of sequenced frames to local recipients."""

    def __init__(
        self,
        callLater: Callable,
        maxBacklog: int = 1 << 20,
        encode: Callable[[Event], bytes] | None = None,
    ) -> None:
        self._callLater = callLater
        self.maxBacklog = maxBacklog
        #: The recipients' codec's spelling of an event (IClientCodec.event),
        #: called once per event for all of them (None: tests that deliver
        #: frames themselves).
        self.encode = encode
        # Live recipients and the write each had when it went live: the
        # flush calls these, one lookup fewer per recipient per turn.
        self._live: dict[IRecipient, Callable[[bytes], None]] = {}
        # Local users by user id (targeted events), and those whose JOIN is
        # on its way through the sequencer.  Ids, not User objects: an event
        # from another process carries a copy of the User.
        self._byUser: dict[int, IRecipient] = {}
        self._expected: dict[int, IRecipient] = {}
        self._paused: dict[IRecipient, _Paused] = {}
        # This turn's frames.  Only when a recipient takes part of them early
        # are their byte offsets worked out (see _endsNow).
        self._pending: list[bytes] = []
        self._ends: list[int] = [0]
        # _pending[i] holds _multi[i] frames where that is more than one.
        self._multi: dict[int, int] = {}
        # Live recipients already given _pending[:i] (a newcomer, or one that
        # got a reply mid-turn): they get only the rest at the flush.
        self._given: dict[IRecipient, int] = {}
        self._flushCall = None
        # Blobs some paused recipient still needs; _log[0] is blob number _base.
        self._log: deque[bytes] = deque()
        self._base = 0
        self._next = 0  # number of the next blob
        self.deliveries = 0
        self.bytesOut = 0

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
        uid = recipient.user.id
        if self._byUser.get(uid) is recipient:
            del self._byUser[uid]
        self._expected.pop(uid, None)
        self._live.pop(recipient, None)
        self._given.pop(recipient, None)
        if self._paused.pop(recipient, None) is not None:
            self._trim()

    def detach(self, recipient: IRecipient) -> None:
        """Stop writing to ``recipient`` (its connection is gone) but keep
        it as its user's: targeted events (a kick) still reach it while it
        waits to be resumed."""
        uid = recipient.user.id
        byUser = self._byUser.get(uid)
        self.remove(recipient)
        if byUser is recipient:
            self._byUser[uid] = recipient

    def add(self, recipient: IRecipient) -> None:
        """``recipient`` (a resumed user) is live from now on: it gets what
        is sequenced after this point, nothing before (its history does)."""
        self._byUser[recipient.user.id] = recipient
        self._live[recipient] = recipient.write
        if self._pending:
            self._given[recipient] = len(self._pending)

    def target(self, recipient: IRecipient) -> None:
        """Targeted events (a kick) reach ``recipient`` from now on, before
        it is live: a resumed user between its WELCOME and READY."""
        self._byUser[recipient.user.id] = recipient

    def removeAll(self) -> None:
        """Flush what is sequenced and forget every recipient (shutdown)."""
        for recipient in list(self._paused):
            self.send(recipient, b"")
        self.flush()
        self._live.clear()
        self._paused.clear()
        self._byUser.clear()
        self._expected.clear()
        self._trim()

    # -- the data path ---------------------------------------------------

    def expect(self, recipient: IRecipient) -> None:
        """``recipient`` sent READY: it receives its own JOIN, when that is
        sequenced, and everything after; targeted events reach it now."""
        self._byUser[recipient.user.id] = recipient
        self._expected[recipient.user.id] = recipient

    def deliver(self, event: Event) -> None:
        target = event.target
        if target is not None:
            recipient = self._byUser.get(target.id)
            if recipient is not None:  # else not one of ours, or gone
                recipient.targeted(event)
            return
        if event.room is not None:
            return  # a 1.2 room's: chatd.core.roomcast delivers those
        joining = None
        if self._expected and isinstance(event, Join):
            joining = self._expected.pop(event.user.id, None)
        self.deliverFrames(self.encode(event), joining, event.count)  # type: ignore[misc]

    def deliverFrames(
        self, frame: bytes, joining: IRecipient | None = None, frames: int = 1
    ) -> None:
        """Deliver ``frame`` (``frames`` whole frames that stay together);
        ``joining`` receives this frame and everything after, nothing before."""
        pending = self._pending
        if joining is not None:
            # The newcomer gets nothing sequenced before its own JOIN.
            self._live[joining] = joining.write
            if pending:
                self._given[joining] = len(pending)
        if frames != 1:
            self._multi[len(pending)] = frames
        pending.append(frame)
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
        given = self._given
        multi = self._multi
        ends = self._endsNow() if given else []
        blob = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending, self._ends, self._given = [], [0], {}
        if multi:
            self._multi = {}
        number = self._next
        self._next = number + 1
        live = self._live
        count = len(pending)
        self.deliveries += _frameCount(multi, count) * len(live)
        self.bytesOut += len(blob) * len(live)
        # write() may pause a recipient (moving it out of _live): iterate a
        # copy.  Newest first: the last to say something (see spoke) is
        # written to before everyone else.
        if not given:
            for write in tuple(reversed(live.values())):
                write(blob)
        else:
            for recipient, write in tuple(reversed(live.items())):
                first = given.get(recipient, 0)
                if not first:
                    write(blob)
                    continue
                self.deliveries -= _frameCount(multi, first)
                self.bytesOut -= ends[first]
                if first < count:
                    write(blob[ends[first] :])
        if self._paused:
            self._queue(number, blob)

    def _queue(self, number: int, blob: bytes) -> None:
        """Keep ``blob`` for the paused recipients that missed it."""
        missed = []
        for recipient, state in self._paused.items():
            if state.cursor == number and state.skip >= len(blob):
                state.cursor, state.skip = number + 1, 0  # it has all of it
            elif state.cursor <= number:
                missed.append((recipient, state))
        if not missed:
            self._trim()
            return
        if not self._log:
            self._base = number
        self._log.append(blob)
        for recipient, state in missed:
            state.queued += len(blob) - (state.skip if state.cursor == number else 0)
            if state.queued + recipient.backlog() > self.maxBacklog:
                del self._paused[recipient]
                recipient.slowConsumer()
        self._trim()

    def _pendingShare(self, recipient: IRecipient) -> bytes:
        """What of this turn's frames ``recipient`` has not been given; it
        counts as given from now on."""
        pending = self._pending
        first = self._given.get(recipient, 0)
        if first == len(pending):
            return b""
        self._given[recipient] = len(pending)
        share = b"".join(pending[first:])
        # Delivered now: the flush counts only what it writes.
        multi = self._multi
        self.deliveries += _frameCount(multi, len(pending)) - _frameCount(multi, first)
        self.bytesOut += len(share)
        return share

    def _endsNow(self) -> list[int]:
        """Byte offsets of this turn's frames: ``_pending[:i]`` ends at [i]."""
        ends = self._ends
        for frame in self._pending[len(ends) - 1 :]:
            ends.append(ends[-1] + len(frame))
        return ends

    def send(self, recipient: IRecipient, data: bytes) -> None:
        """Write ``data`` to one recipient, after everything sequenced before it.

        Used for replies (ECHO, PONG, ERROR, USERS) and whispers, so that one
        connection's frames keep their order.  A live recipient gets its share
        of this turn's frames now, ahead of ``data``; the others still get the
        turn's frames in one batch at the flush.
        """
        if recipient in self._live:
            if self._pending:
                data = self._pendingShare(recipient) + data
        elif recipient in self._paused:
            data = self._catchUp(recipient, self._paused[recipient]) + data
        if data:
            recipient.write(data)

    def _catchUp(self, recipient: IRecipient, state: _Paused) -> bytes:
        """Everything a paused recipient is owed, up to now; it is then owed
        nothing (its backlog moves into its transport)."""
        parts = list(islice(self._log, state.cursor - self._base, None))
        if parts and state.skip:
            parts[0] = parts[0][state.skip :]
        if self._pending:
            # It was given this turn's frames up to its skip, if it was paused
            # this turn; the rest it gets now.
            skip = state.skip if state.cursor == self._next else 0
            parts.extend(self._pending[self._endsNow().index(skip) :])
        state.cursor, state.skip, state.queued = self._next, self._endsNow()[-1], 0
        self._trim()
        return b"".join(parts)

    # -- flow control (called by the recipient, as the transport's producer) --

    def pause(self, recipient: IRecipient) -> None:
        if recipient in self._live:
            del self._live[recipient]
            first = self._given.pop(recipient, 0)
            skip = self._endsNow()[first] if first else 0
            self._paused[recipient] = _Paused(self._next, skip)

    def resume(self, recipient: IRecipient) -> None:
        state = self._paused.pop(recipient, None)
        if state is None:
            return
        data = self._catchUp(recipient, state) if state.cursor < self._next else b""
        self._live[recipient] = recipient.write
        if self._pending:
            # It has this turn's frames up to its skip; the flush gives the rest.
            index = self._endsNow().index(state.skip) if state.skip else 0
            if index:
                self._given[recipient] = index
        self._trim()
        if data:
            recipient.write(data)  # may pause it again; that is fine

    def spoke(self, recipient: IRecipient) -> None:
        """``recipient`` submitted a message: write to it first from the
        next flush on.  Its own copy is its acknowledgement; a client that
        keeps a window of messages in flight (every pipelining client) sends
        the next ones as soon as it has it, so they are there to read when
        the flush ends instead of a round trip later, and the next turn
        carries more messages per write.  Everyone gets the same frames in
        the same order; only who is written to first changes."""
        live = self._live
        if recipient in live and next(reversed(live)) is not recipient:
            live[recipient] = live.pop(recipient)

    def rebind(self, recipient: IRecipient) -> None:
        """``recipient`` writes another way from now on (a front end that
        filters its output switched writers): look its ``write`` up again."""
        if recipient in self._live:
            self._live[recipient] = recipient.write

    def backlog(self, recipient: IRecipient) -> int:
        """Bytes held for ``recipient``: its front end's plus its queue."""
        state = self._paused.get(recipient)
        queued = state.queued if state is not None else 0
        return queued + recipient.backlog()

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
