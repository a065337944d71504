"""Sequencing: the one total order of events.

:class:`ISequencer` is the seam a cluster plugs into: a session submits an
event and gets its sequence number as a Deferred (a remote sequencer answers
later, or fails, and the session then tells its user UNAVAILABLE); every
subscribed :class:`IEventSink` (this process's fan-out and roster replica)
is handed each event in sequence order.  :class:`LocalSequencer` is the
in-process implementation: the order is the order of calls, and sequencing
is an integer increment and one call per sink.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from chatd.core.events import Event


class IEventSink(Interface):
    """Something that takes sequenced events, in order."""

    def deliver(event: Event) -> None:
        """``event`` has its place (``event.seq``) in the total order."""


class ISequencer(Interface):
    """Decides the one total order of events."""

    def submit(event: Event) -> Deferred[int]:
        """Give ``event`` its place in the order; fires with its sequence
        number once it has one and this process's sinks have been handed it
        (so what the submitter says next comes after it), or fails if the
        order cannot be reached."""

    def subscribe(sink: IEventSink, after: int | None = None) -> None:
        """Hand ``sink`` every event sequenced after number ``after``
        (None: from now on)."""


class ISynchronousSequencer(ISequencer):
    """A sequencer whose answer is always known at once (one process): a
    submitter may skip the Deferred, the usual case's one cost per message
    that the seam adds."""

    def sequence(event: Event) -> int:
        """Sequence ``event`` and hand it to every sink before returning its
        number; never fails."""


@implementer(ISynchronousSequencer)
class LocalSequencer:
    """The order is the order of calls: right for a single process."""

    def __init__(self, after: int = 0) -> None:
        """``after``: the last seq already given (a history kept on disk
        across a restart), so numbers go on increasing."""
        self.last = after
        self._sinks: list[IEventSink] = []

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None and after != self.last:
            raise ValueError(f"events after {after} are gone; now at {self.last}")
        self._sinks.append(sink)

    def sequence(self, event: Event) -> int:
        self.last = seq = self.last + 1
        event.seq = seq
        for sink in self._sinks:
            sink.deliver(event)
        return seq

    def submit(self, event: Event) -> Deferred[int]:
        return succeed(self.sequence(event))
