"""The room's sequencer in a cluster: Redis streams every node reads.

What this node's users submit in one reactor turn goes to Redis in ONE
EVALSHA (INCRBY the sequence by the batch size, XADD each run of it that
goes to one stream: a room's ROOM_MESSAGEs to the room's stream when this
node reads it, all else to the cluster's), and every node, this one too,
delivers events only as it reads them back (:mod:`.streamread`), so all
nodes deliver each room's events in the same order.

While Redis cannot be reached, submits fail at once (the session answers
UNAVAILABLE); nothing is queued but the LEAVEs of users who left meanwhile
(at most one each), sent when Redis is back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.redislink import ClusterUnavailable, RedisLink
from chatd.cluster.standing import Standing
from chatd.cluster.streammerge import MAIN
from chatd.cluster.streamread import StreamReader
from chatd.cluster.who import usersOf
from chatd.core.events import Event, Join, Leave
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomMessage, RoomTopic
from chatd.core.rooms import key
from chatd.core.roster import User
from chatd.wire.eventcodec import encodeBatch

log = Logger(namespace="chatd.cluster")

#: Batches sent and not yet answered: past this, submits fail (UNAVAILABLE)
#: rather than queue behind a Redis that does not keep up.
MAX_IN_FLIGHT = 256
#: Events gathered in one turn at most (the front ends bound what a turn reads).
MAX_PENDING = 100_000
#: Stream entries kept (MAXLEN ~): a node more than this behind has a gap.
STREAM_MAXLEN = 100_000


class StreamSequencer(StreamReader):
    """Submits batched per turn, delivery as the streams are read back."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        StreamReader.__init__(self, link, standing)
        self._pending: list[tuple[Event, Deferred[int]]] = []
        self._flushCall: Any = None
        self._inFlight = 0
        self._drained: list[Deferred[None]] = []
        # Users whose JOIN was refused before it reached Redis: their LEAVE
        # is dropped too, or others would see a LEAVE without a JOIN.
        self._unjoined: set[int] = set()
        self._owedLeaves: dict[int, Leave] = {}

    # -- submitting ------------------------------------------------------------

    def submit(self, event: Event) -> Deferred[int]:
        if isinstance(event, Leave) and event.user.id in self._unjoined:
            self._unjoined.discard(event.user.id)
            return defer.succeed(0)  # never joined: nothing to tell anyone
        why = None
        if not self.standing.registered:
            why = "this node has not joined the cluster"
        elif not self.link.up:
            why = "Redis is unreachable"
        elif self._inFlight >= MAX_IN_FLIGHT or len(self._pending) >= MAX_PENDING:
            why = "Redis is not keeping up"
        if why is not None:
            if isinstance(event, Join):
                self._unjoined.add(event.user.id)
            self._owe(event)
            return defer.fail(ClusterUnavailable(why))
        if isinstance(event, Join):
            self.local[event.user.id] = event.user
            self.standing.maxId = max(self.standing.maxId, event.user.id)
        elif isinstance(event, Leave):
            self.local.pop(event.user.id, None)
            self.since.pop(event.user.id, None)
        d: Deferred[int] = Deferred()
        self._pending.append((event, d))
        if self._flushCall is None:
            self._flushCall = self.standing.clock.callLater(0, self.flush)
        return d

    def _owe(self, event: Event) -> None:
        """A LEAVE that could not be sent is sent when Redis is back, or
        others would list its user for ever (without a lease, the reaper
        sends it instead)."""
        standing = self.standing
        if isinstance(event, Leave) and (standing.registered or standing.recovering):
            self._owedLeaves[event.user.id] = event

    def payLeaves(self) -> None:
        """Send the LEAVEs owed since Redis was away."""
        leaves = list(self._owedLeaves.values())
        self._owedLeaves.clear()
        for leave in leaves:
            self.submit(leave).addErrback(lambda f: None)

    def flush(self) -> None:
        """This turn's events as one stream entry: one EVALSHA."""
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[Event, Deferred[int]]]) -> None:
        events = [event for event, _ in batch]
        joins: list[object] = []
        leaves: list[object] = []
        rooms: list[object] = []  # protocol 1.2: what the snapshot needs
        runs = self._runs(events)
        for index, event in enumerate(events):
            if isinstance(event, Join):
                run = next(k for k, (_, at, _) in enumerate(runs, 1) if index in at)
                joins += [event.user.id, event.user.entry, event.user.name.lower(), run]
            elif isinstance(event, Leave):
                leaves.append(event.user.id)
            elif event.room is not None:
                rooms += roomStep(event, index)
        spelled: list[object] = []
        for name, at, joined in runs:
            spelled += [name, len(at), encodeBatch([events[i] for i in at])]
            spelled += [len(joined), *joined]
        self._inFlight += 1
        d = self.link.script(
            "submit",
            self.standing.name,
            self.standing.token,
            len(events),
            STREAM_MAXLEN,
            len(runs),
            *spelled,
            *joins,
            "-",
            *leaves,
            "-",
            *rooms,
        )

        def sequenced(result: list[Any]) -> None:
            self._answered()
            first = int(result[0])
            for i, (_, waiting) in enumerate(batch):
                self._numbered.append((first + i, waiting))
            self._numbered.sort(key=lambda pair: pair[0])
            self._fireDelivered()

        def failed(failure: Failure) -> None:
            self._answered()
            self.standing.checkLease(failure)
            for event, waiting in batch:
                self._owe(event)
                waiting.errback(ClusterUnavailable(failure.getErrorMessage()))

        d.addCallbacks(sequenced, failed)

    def _answered(self) -> None:
        self._inFlight -= 1
        if not self._inFlight:
            waiters, self._drained = self._drained, []
            for waiting in waiters:
                waiting.callback(None)

    def allAnswered(self) -> Deferred[None]:
        """Fires once every batch sent has its answer (or its timeout)."""
        if not self._inFlight:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def failNumbered(self, why: str) -> None:
        """Submissions numbered but not read back will never be: fail them."""
        numbered, self._numbered = self._numbered, []
        for _, waiting in numbered:
            waiting.errback(ClusterUnavailable(why))

    def _runs(self, events: list[Event]) -> list[tuple[bytes, range, list[bytes]]]:
        """The batch as runs that go to one stream each, in its order:
        (room key, b'' for the cluster's; the events' indices; the rooms
        joined in it).  A room's messages go to its stream when this node
        reads it (it does, if a member here sends), else to the cluster's
        (every reader of the room reads that one too)."""
        runs: list[tuple[bytes, range, list[bytes]]] = []
        for index, event in enumerate(events):
            name = b""
            if type(event) is RoomMessage and self.reads(key(event.room)):
                name = key(event.room)
            if runs and runs[-1][0] == name:
                runs[-1] = (name, range(runs[-1][1].start, index + 1), runs[-1][2])
            else:
                runs.append((name, range(index, index + 1), []))
            if type(event) is RoomJoin:
                runs[-1][2].append(key(event.room))
        return runs

    def forget(self, why: str) -> None:
        """The lease is lost: so are our users, what we owed and what waits."""
        self.local.clear()
        self.since.clear()
        self.forgetRooms()
        self._owedLeaves.clear()
        pending, self._pending = self._pending, []
        for _, waiting in pending:
            waiting.errback(ClusterUnavailable(why))
        self.failNumbered(why)

    def localUsers(self) -> list[User]:
        """This node's joined users, those still leaving excluded."""
        return [u for uid, u in self.local.items() if uid not in self._owedLeaves]

    # -- where reading starts --------------------------------------------------

    async def snapshot(self) -> None:
        """Start from now, the active users delivered as JOINs first."""
        lastId, seq, flat, rooms, lastNum = await self.link.script("snapshot")
        self.lastId = lastId
        self.lastSeq = self.clusterSeq = int(seq)
        self.streams[MAIN].lastNum = int(lastNum)
        users = usersOf(flat)
        events: list[Event] = [Join(user) for user in users]
        events += roomsOf(rooms, {user.id: user for user in users})
        for event in events:
            for sink in self._sinks:
                sink.deliver(event)
        if self.history is not None:  # the stream's tail
            await self.history.seed(lastId)
        log.info(
            "cluster: {n} users active, sequence at {seq}",
            n=len(users),
            seq=self.lastSeq,
        )


def roomStep(event: Event, index: int) -> list[object]:
    """A room event's step for the snapshot the submit script keeps (the
    ``index``-th event of its batch): J lower name uid index, L lower uid,
    T lower topic; nothing for a ROOM_MESSAGE."""
    room = event.room or b""
    if isinstance(event, RoomJoin):
        return [b"J", room.lower(), room, event.user.id, index]
    if isinstance(event, RoomLeave):
        return [b"L", room.lower(), event.user.id]
    if isinstance(event, RoomTopic):
        return [b"T", room.lower(), event.topic]
    return []


def roomsOf(flat: list[Any], users: dict[int, User]) -> list[Event]:
    """The snapshot's rooms as events: every member's ROOM_JOIN (in the
    order they entered; a user no longer active is left out), then each
    room's topic."""
    joins: list[Event] = []
    topics: list[Event] = []
    i = 0
    while i + 2 < len(flat):
        name, topic, count = flat[i], flat[i + 1], int(flat[i + 2])
        for uid in flat[i + 3 : i + 3 + count]:
            user = users.get(int(uid))
            if user is not None:
                joins.append(RoomJoin(name, user))
        if topic:
            topics.append(RoomTopic(name, topic))
        i += 3 + count
    return joins + topics
