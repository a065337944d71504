"""A worker's sequencer and roster: the main process is the authority.

:class:`RemoteSequencer` sends each event to the main process and delivers
nothing itself until the main process's BATCH brings it back in the one
total order (the worker's own events included, so every worker sees the
same order).  :class:`RemoteRoster` asks the main process for names, ids and
colours, so they are unique across workers.  Both fail what is pending, and
everything later, once the link is gone: the sessions then say UNAVAILABLE.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from chatd.cluster import link
from chatd.core.events import Event
from chatd.core.roster import IRoster, User
from chatd.core.sequencer import IEventSink, ISequencer
from chatd.wire.eventcodec import decodeBatch, encodeEvent, userFromEntry

Send = Callable[[int, bytes], None]


class LinkLost(ConnectionError):
    """The main process cannot be reached."""


@implementer(ISequencer)
class RemoteSequencer:
    """Events go to the main process; BATCHes come back, in order."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sinks: list[IEventSink] = []
        self._waiting: deque[Deferred[int]] = deque()
        self.lost: str | None = None
        self.last = 0

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None and after != self.last:
            raise ValueError(f"events after {after} are gone; now at {self.last}")
        self._sinks.append(sink)

    def submit(self, event: Event) -> Deferred[int]:
        if self.lost is not None:
            return fail(LinkLost(self.lost))
        self._send(link.SUBMIT, encodeEvent(event))
        d: Deferred[int] = Deferred()
        self._waiting.append(d)
        return d

    def batchReceived(self, own: list[int], blob: bytes) -> None:
        """One turn of the order: deliver it, then answer our submissions."""
        sinks = self._sinks
        for event in decodeBatch(blob):
            self.last = event.seq
            for sink in sinks:
                sink.deliver(event)
        waiting = self._waiting
        for seq in own:
            if not waiting:
                raise link.LinkError("a sequence number for nothing submitted")
            waiting.popleft().callback(seq)

    def linkLost(self, why: str) -> None:
        self.lost = why
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(LinkLost(why))


@implementer(IRoster)
class RemoteRoster:
    """Claims answered by the main process's roster."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._pending: dict[int, Deferred[User | None]] = {}
        self._next = 0
        self.lost: str | None = None

    def claim(self, name: bytes) -> Deferred[User | None]:
        if self.lost is not None:
            return fail(LinkLost(self.lost))
        self._next = req = (self._next + 1) & 0xFFFFFFFF
        d: Deferred[User | None] = Deferred()
        self._pending[req] = d
        self._send(link.CLAIM, link.U32.pack(req) + name)
        return d

    def release(self, user: User) -> None:
        if self.lost is None:
            self._send(link.RELEASE, link.U32.pack(user.id))

    def answered(self, payload: bytes) -> None:
        """A NAMED answer to one of our claims."""
        if len(payload) < link.NAMED_HEAD.size:
            raise link.LinkError("short NAMED")
        req, status = link.NAMED_HEAD.unpack_from(payload)
        d = self._pending.pop(req, None)
        if d is None:
            raise link.LinkError(f"NAMED for unknown claim {req}")
        if status == link.GRANTED:
            d.callback(userFromEntry(payload[link.NAMED_HEAD.size :]))
        elif status == link.TAKEN:
            d.callback(None)
        else:
            d.errback(OverflowError("user ids exhausted"))

    def linkLost(self, why: str) -> None:
        self.lost = why
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(LinkLost(why))
