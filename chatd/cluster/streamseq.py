"""The room's sequencer in a cluster: a Redis stream every node reads.

What this node's users submit in one reactor turn goes to Redis as ONE
stream entry (one EVALSHA: INCRBY the sequence by the batch size, XADD), and
every node, this one too, delivers events only as it reads them back from
the stream (``XREAD BLOCK`` on a connection of its own), so all nodes
deliver the same events in the same order.

While Redis cannot be reached, submits fail at once (the session answers
UNAVAILABLE); nothing is queued but the LEAVEs of users who left meanwhile
(at most one each), sent when Redis is back.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.redislink import ClusterUnavailable, RedisLink, text
from chatd.cluster.standing import Standing
from chatd.cluster.who import usersOf
from chatd.core.events import Event, Join, Leave
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomTopic
from chatd.core.roster import User
from chatd.core.sequencer import IEventSink
from chatd.wire.eventcodec import BadEvent, decodeBatch, encodeBatch

log = Logger(namespace="chatd.cluster")

#: Batches sent and not yet answered: past this, submits fail (UNAVAILABLE)
#: rather than queue behind a Redis that does not keep up.
MAX_IN_FLIGHT = 256
#: Events gathered in one turn at most (the front ends bound what a turn reads).
MAX_PENDING = 100_000
#: Stream entries kept (MAXLEN ~): a node more than this behind has a gap.
STREAM_MAXLEN = 100_000


class StreamSequencer:
    """Submits batched per turn, delivery as the stream is read back."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        self.link = link
        self.standing = standing
        #: Called when WHO may be wrong (a gap, a stream read anew).
        self.rebuildWho: Callable[[], None] = lambda: None
        self.lastId = b"0-0"
        self.lastSeq = 0
        self.clusterSeq = 0
        self.gaps = 0
        #: Events read back from the stream (all rooms'): the cost a node
        #: pays for others' traffic shows here (bench/roomstreams.py).
        self.eventsRead = 0
        self._sinks: list[IEventSink] = []
        self._pending: list[tuple[Event, Deferred[int]]] = []
        # Submissions Redis numbered that the stream reader has not yet
        # delivered here: (seq, Deferred), in order.  ISequencer promises
        # the Deferred fires after local delivery (replies stay in order).
        self._numbered: list[tuple[int, Deferred[int]]] = []
        self._flushCall: Any = None
        self._inFlight = 0
        self._drained: list[Deferred[None]] = []
        # Users whose JOIN was refused before it reached Redis: their LEAVE
        # is dropped too, or others would see a LEAVE without a JOIN.
        self._unjoined: set[int] = set()
        # This node's users from their JOIN to their LEAVE, by id, and the
        # stream id of their JOIN (their activation time) once read back.
        self.local: dict[int, User] = {}
        self.since: dict[int, str] = {}
        self._owedLeaves: dict[int, Leave] = {}
        self._reading = False
        self._readGen = 0  # bumped when reading restarts on a new stream
        self._stale = False  # the stream went backwards: wait for recovery
        #: Protocol 1.2: the resume seam, told of hand-overs
        #: (chatd.cluster.redisresumes); the history, seeded at start and
        #: told of gaps and of a stream read anew (.streamhistory).
        self.resumes: Any = None
        self.history: Any = None

    # -- submitting ------------------------------------------------------------

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None:
            raise ValueError("a cluster node delivers from now on only")
        self._sinks.append(sink)

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
        for index, event in enumerate(events):
            if isinstance(event, Join):
                joins += [event.user.id, event.user.entry, event.user.name.lower()]
            elif isinstance(event, Leave):
                leaves.append(event.user.id)
            elif event.room is not None:
                rooms += roomStep(event, index)
        self._inFlight += 1
        d = self.link.script(
            "submit",
            self.standing.name,
            self.standing.token,
            len(events),
            encodeBatch(events),
            STREAM_MAXLEN,
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

    def forget(self, why: str) -> None:
        """The lease is lost: so are our users, what we owed and what waits."""
        self.local.clear()
        self.since.clear()
        self._owedLeaves.clear()
        pending, self._pending = self._pending, []
        for _, waiting in pending:
            waiting.errback(ClusterUnavailable(why))
        self.failNumbered(why)

    def localUsers(self) -> list[User]:
        """This node's joined users, those still leaving excluded."""
        return [u for uid, u in self.local.items() if uid not in self._owedLeaves]

    # -- reading the stream ----------------------------------------------------

    def read(self) -> None:
        """Keep reading (unless reading already, or stopped, or stale)."""
        if self.standing.stopping or self._reading or self._stale:
            return
        self._reading = True
        gen = self._readGen
        d = self.link.read(self.lastId)
        d.addCallbacks(self._gotEntries, self._readFailed, (gen,))

    def _gotEntries(self, reply: Any, gen: int) -> None:
        self._reading = False
        for _stream, entries in reply or ():
            for entryId, fields in entries:
                if gen != self._readGen or self._stale:
                    break  # read from a stream Redis has since lost
                self._entry(entryId, fields)
        self.read()

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if not self.standing.stopping:
            log.warn(
                "cluster: reading the stream failed: {why}", why=text(failure.value)
            )
            self.standing.later(1, self.read)

    def _entry(self, entryId: bytes, fields: list[bytes]) -> None:
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        self.lastId = entryId
        try:
            first = int(values[b"s"])
            events = decodeBatch(values[b"b"])
        except (KeyError, ValueError, BadEvent) as e:
            log.error("cluster: bad stream entry {id}: {e}", id=text(entryId), e=e)
            return
        if first <= self.lastSeq:
            # Numbers going backwards: Redis lost its state.  Deliver nothing
            # until the heartbeat has registered again and reading restarts.
            log.warn(
                "cluster: the sequence went back from {last} to {first}: "
                "Redis lost its state?",
                last=self.lastSeq,
                first=first,
            )
            self._stale = True
            self.standing.beatSoon()
            return
        if first != self.lastSeq + 1:
            self.gaps += 1
            self.rebuildWho()
            if self.history is not None:
                self.history.gap(first)
            log.warn(
                "cluster: gap in the sequence: expected {want}, got {got} "
                "(entries trimmed while this node was away?)",
                want=self.lastSeq + 1,
                got=first,
            )
        if values.get(b"n") != self.standing.name.encode() and any(
            isinstance(e, Leave) and e.user.id in self.local for e in events
        ):
            # Another node sequenced our users' LEAVEs: it reaped us.  Cut
            # them first, so none receives its own LEAVE.
            self.standing.leaseLost("was declared gone by another node")
        self.eventsRead += len(events)
        for i, event in enumerate(events):
            event.seq = first + i
            if isinstance(event, Join):
                self.standing.maxId = max(self.standing.maxId, event.user.id)
                if event.user.id in self.local:
                    self.since.setdefault(event.user.id, text(entryId))
            for sink in self._sinks:
                sink.deliver(event)
        self.lastSeq = first + len(events) - 1
        handOver = values.get(b"h")
        if handOver is not None and self.resumes is not None:
            self.resumes.handedOver(handOver, values.get(b"n", b""))
        self._fireDelivered()

    def whenRead(self, seq: int) -> Deferred[int]:
        """Fires once every event up to ``seq`` was delivered here (fails
        like a submission when that order is lost)."""
        d: Deferred[int] = Deferred()
        bisect.insort(self._numbered, (seq, d), key=lambda pair: pair[0])
        self._fireDelivered()
        return d

    def _fireDelivered(self) -> None:
        """Fire the submissions whose events the reader has delivered."""
        numbered = self._numbered
        while numbered and numbered[0][0] <= self.lastSeq:
            seq, waiting = numbered.pop(0)
            waiting.callback(seq)

    # -- where reading starts --------------------------------------------------

    @property
    def fresh(self) -> bool:
        """Nothing read yet: a snapshot tells where to start."""
        return self.lastSeq == 0 and self.lastId == b"0-0"

    async def snapshot(self) -> None:
        """Start from now, the active users delivered as JOINs first."""
        lastId, seq, flat, rooms = await self.link.script("snapshot")
        self.lastId = lastId
        self.lastSeq = self.clusterSeq = int(seq)
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

    @property
    def stale(self) -> bool:
        """The numbers went back: nothing is delivered until reading anew."""
        return self._stale

    async def restartReading(self, fromStart: bool) -> None:
        """Read a new stream: from its start (Redis lost its state: its
        numbers begin again), or from now on, the snapshot telling WHO."""
        self._readGen += 1
        self._stale = False
        if fromStart:
            self.lastId, self.lastSeq, self.clusterSeq = b"0-0", 0, 0
            if self.history is not None:  # numbers begin again: so does history
                self.history.restarted()
            return
        lastId, seq, *_ = await self.link.call("snapshot")
        self.lastId, self.lastSeq = lastId, int(seq)
        self.rebuildWho()


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
