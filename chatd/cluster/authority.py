"""The main process's sequencer and roster for ``--workers``: one order, one set of names.

:class:`Authority` numbers every event, from whichever worker, and sends
each reactor turn's events to every worker in one BATCH.  :class:`Names`
hands out names, ids and colours unique across workers and remembers which
worker holds which, so that a worker's users can leave when it goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.cluster import link
from chatd.cluster.roomrouting import RoomRouting
from chatd.core.events import Event, Join, Leave
from chatd.core.roster import Roster, User
from chatd.core.sequencer import IEventSink, ISequencer
from chatd.wire.eventcodec import encodeEvent

if TYPE_CHECKING:
    from chatd.cluster.handle import WorkerHandle
    from chatd.core.roomcast import RoomCast
    from chatd.core.roster import Replica
    from chatd.wire import LeaveReason


@implementer(ISequencer)
class Authority:
    """The one total order: numbers events, delivers them to this process's
    sinks at once and to every worker in one BATCH per reactor turn."""

    def __init__(self, callLater: Any) -> None:
        self._callLater = callLater
        self.last = 0
        self._sinks: list[IEventSink] = []
        self._parts: list[bytes] = []
        #: This turn's parts that only some workers get (1.2 room messages):
        #: part index -> those workers.
        self._only: dict[int, frozenset] = {}
        self.routing = RoomRouting()
        self._own: dict[WorkerHandle, list[int]] = {}
        self._flushCall: Any = None
        self.workers: list[WorkerHandle] = []

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None and after != self.last:
            raise ValueError(f"events after {after} are gone; now at {self.last}")
        self._sinks.append(sink)

    def submit(self, event: Event, origin: WorkerHandle | None = None) -> Deferred[int]:
        self.last = seq = self.last + 1
        event.seq = seq
        for sink in self._sinks:
            sink.deliver(event)
        data = encodeEvent(event)
        targets = self.routing.targets(event, origin)
        if targets is not None:
            self._only[len(self._parts)] = targets
        self._parts.append(link.U32.pack(len(data)) + data)
        if origin is not None:
            self._own.setdefault(origin, []).append(seq)
        if self._flushCall is None:
            self._flushCall = self._callLater(0, self.flush)
        return succeed(seq)

    def flush(self) -> None:
        """Send this turn's events to every worker: the same blob for all."""
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        if not self._parts:
            return
        parts, only = self._parts, self._only
        own, self._parts, self._own, self._only = self._own, [], {}, {}
        # A copy: a send may find its worker too slow, which drops it from
        # the list (walking the list itself, the next worker missed the batch).
        workers = tuple(self.workers)
        if not only:
            blob = b"".join(parts)
            for worker in workers:
                worker.sendBatch(own.get(worker, []), blob)
            return
        for worker in workers:  # some parts are not for every worker
            mine = [p for i, p in enumerate(parts) if worker in only.get(i, (worker,))]
            if mine or own.get(worker):
                worker.sendBatch(own.get(worker, []), b"".join(mine))

    def drop(self, worker: WorkerHandle) -> None:
        """``worker`` gets no more batches (gone, or cut off)."""
        if worker in self.workers:
            self.workers.remove(worker)

    def seed(self, replica: Replica, rooms: RoomCast | None = None) -> bytes:
        """A JOIN of everyone here, and (protocol 1.2) a ROOM_JOIN of every
        member of every room and each room's topic, as a batch blob for a
        new worker: it knows the rooms before its first user does."""
        events: list[Event] = [Join(user) for user in replica.active]
        if rooms is not None:
            events += rooms.snapshot()
        seed = [encodeEvent(event) for event in events]
        return b"".join(link.U32.pack(len(e)) + e for e in seed)


class Names:
    """Names, ids and colours unique across workers (the room's roster),
    and which worker holds which (``handle.uids``)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.roster = Roster()
        #: user id -> the user, while a worker holds its name.
        self.users: dict[int, User] = {}

    def claim(self, handle: WorkerHandle, req: int, name: bytes) -> None:
        """A worker's CLAIM: answer NAMED (granted, taken or exhausted)."""
        answers: list[Any] = []
        self.roster.claim(name).addBoth(answers.append)
        answer = answers[0]
        if isinstance(answer, Failure):
            status, entry = link.EXHAUSTED, b""
        elif answer is None:
            status, entry = link.TAKEN, b""
        else:
            self.users[answer.id] = answer
            handle.uids.add(answer.id)
            status, entry = link.GRANTED, answer.entry
        handle.send(link.NAMED, link.NAMED_HEAD.pack(req, status) + entry)

    def release(self, handle: WorkerHandle, uid: int) -> None:
        """A worker's RELEASE: the name is free again."""
        if uid in handle.uids:
            handle.uids.discard(uid)
            user = self.users.pop(uid, None)
            if user is not None:
                self.roster.release(user)

    def move(self, uid: int, old: WorkerHandle, new: WorkerHandle) -> None:
        """A resume took user ``uid`` from ``old`` to ``new``: its name is
        ``new``'s now (released there, or left if ``new`` dies)."""
        old.uids.discard(uid)
        new.uids.add(uid)

    def forget(
        self, handle: WorkerHandle, reason: LeaveReason, replica: Replica
    ) -> None:
        """Every user of ``handle`` leaves (sequenced here) and is free."""
        for uid in sorted(handle.uids):
            user = self.users.pop(uid, None)
            if user is None:
                continue
            active = replica.find(user.name)
            if active is not None and active.id == uid:
                self.authority.submit(Leave(active, reason))
            self.roster.release(user)
        handle.uids.clear()
