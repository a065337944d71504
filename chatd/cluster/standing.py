"""A cluster node's standing: its lease as every part of the node sees it.

The sequencer, the name roster and the membership all ask whether this node
holds a lease (and with which token) before they send anything, and any of
them may learn from a reply that the lease is gone.  :class:`Standing` is
that shared state, and the two hooks the membership fills in: run a
heartbeat now, and give the lease up as lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from chatd.cluster.redislink import text


def _never(*args: object) -> None:
    """A hook not filled in yet."""


class Standing:
    """This node's name, lease token and epoch; its pending calls."""

    def __init__(self, name: str, ttl: float, clock: Any) -> None:
        self.name = name
        self.ttl = ttl
        self.clock = clock
        self.token = ""  # this lease's token; "" while not registered
        self.epoch = ""  # Redis' chatd:epoch when this node registered
        self.maxId = 0  # the highest user id seen: ids resume above it
        self.renewed = 0.0  # when the lease was last renewed
        self.recovering = False  # registering again after Redis lost its state
        self.stopping = False
        #: Run a heartbeat (renew, or register, or recover).
        self.beat: Callable[[], None] = _never
        #: Others have (or will have) sequenced our users' LEAVEs.
        self.leaseLost: Callable[[str], None] = _never
        self._calls: list[IDelayedCall] = []  # retries and early beats

    @property
    def registered(self) -> bool:
        return bool(self.token)

    @property
    def ttlMs(self) -> int:
        return int(self.ttl * 1000)

    def overdue(self) -> bool:
        """Registered, yet not renewed for a TTL: the others reap us."""
        return self.registered and self.clock.seconds() - self.renewed > self.ttl

    def later(self, seconds: float, f: Callable[[], None]) -> None:
        """callLater, remembered so that :meth:`cancelCalls` can cancel it."""
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(self.clock.callLater(seconds, f))

    def beatSoon(self) -> None:
        self.later(0, self.beat)

    def cancelCalls(self) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()

    def checkLease(self, failure: Failure) -> None:
        """``LEASE lost <epoch>``: declared gone, or (another epoch) Redis
        lost its state, which the heartbeat, run now, recovers from."""
        why = text(failure.value)
        if "LEASE" not in why or not self.registered:
            return
        if why.rsplit(" ", 1)[-1] != self.epoch:
            self.beatSoon()
        else:
            self.leaseLost("its lease is gone")
